"""How a Python worker reads the image files of its batches itself, so the JVM never copies
an image into its rows, into Arrow and over the worker's socket (BENCHMARKS.md, eighth round).

Local files are read with open(); objects in S3 with pyarrow, many at once and one batch
ahead of the batch being featurized: a GET waits on the network (tens of ms on S3), where a
core featurizes an image in ~8 ms, and S3A read a task's files one after another.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from featurizer import storage

DISAPPEARED = "file disappeared during the run"
EMPTY = "empty file (0 bytes)"
# Reads in flight per task: enough to cover two Arrow batches of S3 latency.
READ_THREADS = 16

# (bytes, None) or (None, why the file was not read)
Read = tuple[bytes | None, str | None]


@dataclass(frozen=True)
class FileReader:
    """Reads files named as Spark names them: `file:/x` with `fs` None, or `s3a://b/k`
    (`s3://`) with `fs` a pyarrow S3FileSystem holding the job's S3 settings. A file gone
    since the listing, or a local file that cannot be read, is an error row like any other;
    any other failure of a read from S3 (after the file system's own retries) fails the task,
    as S3A's would, and Spark retries it."""

    fs: Any = None

    def read(self, paths: Sequence[str]) -> tuple[list[bytes | None], list[str | None]]:
        """The files' bytes, and why not (None when read), in order."""
        if self.fs is None:
            reads = [self._read_one(path) for path in paths]
        else:
            with ThreadPoolExecutor(READ_THREADS) as pool:
                reads = list(pool.map(self._read_one, paths))
        return [data for data, _ in reads], [error for _, error in reads]

    def ahead(self, batches: Iterator[Any]) -> Iterator[tuple[Any, list[Read]]]:
        """Each Arrow batch (with a `path` column) and its files' reads; the next batch's
        files are read while the caller works on this one."""
        with ThreadPoolExecutor(READ_THREADS if self.fs is not None else 1) as pool:
            pending: tuple[Any, list[Future[Read]]] | None = None
            for batch in batches:
                paths = batch.column(batch.schema.names.index("path")).to_pylist()
                reading = (batch, [pool.submit(self._read_one, path) for path in paths])
                if pending is not None:
                    yield pending[0], [future.result() for future in pending[1]]
                pending = reading
            if pending is not None:
                yield pending[0], [future.result() for future in pending[1]]

    def _read_one(self, path: str) -> Read:
        if self.fs is None:
            try:
                with open(storage.local_path(path) or path, "rb") as handle:
                    return _nonempty(handle.read())
            except FileNotFoundError:
                return None, DISAPPEARED
            except OSError as exc:
                return None, f"file could not be read: {exc.strerror or exc}"
        try:
            with self.fs.open_input_stream(object_path(path)) as stream:
                return _nonempty(stream.read())
        except FileNotFoundError:
            return None, DISAPPEARED


def _nonempty(data: bytes) -> Read:
    return (data, None) if data else (None, EMPTY)


def object_path(path: str) -> str:
    """pyarrow's `bucket/key` for Spark's `s3a://bucket/key` (or `s3://`)."""
    scheme, _, rest = path.partition("://")
    if scheme not in storage.S3_SCHEMES or not rest:
        raise ValueError(f"not an S3 object: {path}")
    return rest
