"""What a Python worker does with a partition of images, and its per-worker engine cache.

The featurizing function is a `mapInArrow` function: Arrow batches of `path, label, length,
modificationTime` (and `content`, when the JVM read the files) in, batches of the staged rows
(`STAGED_COLUMNS`: the vector as float32 bytes, or an error) out. Where a batch has no
`content`, the worker reads the files itself (reading.FileReader: local files and S3).

Like `pyspark.ml.functions.predict_batch_udf`: the engine is built once per Python worker
process (Spark reuses workers across tasks and micro-batches) and kept in a module-level
cache keyed by the payload's hash, so the broadcast is only read, and the model only built,
on a cache miss.
"""

from __future__ import annotations

import resource
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from featurizer import arrow_files, engines, images, reading, reduce, vectors
from featurizer.weights import FEATURE_DIM

# The staged rows: what the featurizing tasks write to _work/featurized/.
STAGED_COLUMNS = ("path", "label", "length", "modificationTime", "features", "error")
STAGED_SCHEMA = (
    "path string, label string, length long, modificationTime timestamp, "
    f"features {vectors.STAGED_TYPE}, error string"
)
DISAPPEARED = reading.DISAPPEARED
MOMENTS_SUFFIX = "moments.npz"  # a featurizing task's PCA sums, beside its staged part


class MaxParam:
    """Accumulator that keeps the maximum (peak memory across workers)."""

    def zero(self, value: float) -> float:
        return 0.0

    def addInPlace(self, first: float, second: float) -> float:
        return max(first, second)


_PREDICTORS: dict[str, engines.Predictor] = {}


def cached_predictor(key: str, build: Callable[[], engines.Predictor]) -> engines.Predictor:
    if key not in _PREDICTORS:
        _PREDICTORS.clear()  # one engine per worker: drop a previous run's model
        _PREDICTORS[key] = build()
    return _PREDICTORS[key]


def featurize_contents(
    contents: Sequence[bytes | None],
    predictor: engines.Predictor,
    batch_size: int,
    moments: reduce.Moments | None = None,
) -> tuple[Any, list[str | None]]:
    """Decode + featurize file contents, `batch_size` images at a time, adding the features
    to `moments` if given. Returns the staged vectors (a binary Arrow array of float32 bytes,
    vectors.pack's form, null for a file that failed) and one error message (or None) per
    file; engine failures raise (Spark then retries the task)."""

    matrix = np.empty((len(contents), FEATURE_DIM), vectors.FLOAT32)
    decoded, errors = images.decode_many(contents)  # the good ones, in order
    good = np.flatnonzero([error is None for error in errors])
    for start in range(0, len(decoded), batch_size):
        features = predictor.predict(decoded[start : start + batch_size])  # it preprocesses
        if moments is not None:
            moments.add_rows(features)
        matrix[good[start : start + batch_size]] = features
    failed = np.array([error is not None for error in errors], dtype=bool)
    return vectors.as_binary(matrix, failed), errors


def featurize_batch(
    batch: Any,
    predictor: engines.Predictor,
    batch_size: int,
    moments: reduce.Moments | None = None,
    reads: Sequence[reading.Read] | None = None,
) -> Any:
    """One Arrow batch of files -> its staged rows (STAGED_COLUMNS). The files' bytes are
    the batch's `content` column, or `reads` (a FileReader's, one per row) when it has none."""
    import pyarrow as pa

    names = batch.schema.names
    if reads is None:
        contents = batch.column(names.index("content")).to_pylist()
        unread: list[str | None] = [None] * batch.num_rows
    else:
        contents, unread = [data for data, _ in reads], [error for _, error in reads]
    features, errors = featurize_contents(contents, predictor, batch_size, moments)
    errors = [reason or error for reason, error in zip(unread, errors)]
    kept = [batch.column(names.index(name)) for name in STAGED_COLUMNS[:4]]
    return pa.RecordBatch.from_arrays(
        [*kept, features, pa.array(errors, pa.string())], names=list(STAGED_COLUMNS)
    )


def peak_rss_mb(pid: int | str = "self") -> float | None:
    """Peak resident memory of a process (VmHWM). Not getrusage's ru_maxrss: Linux carries
    that across exec, so a process started by a big parent would report the parent's peak."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError):
        pass
    if pid == "self":  # no /proc (macOS): the best we have
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return None


def _task_cpus() -> int:
    from pyspark import TaskContext

    context = TaskContext.get()
    return max(1, int(context.cpus())) if context is not None else 1


Partition = Callable[[Iterator[Any]], Iterator[Any]]  # Arrow batches in, Arrow batches out


def make_warm(engine: str) -> Partition:
    """A `mapInArrow` function that only imports what featurizing needs (the engine's
    runtime, the image decoder): run once per core before the first micro-batch, it starts
    the Python workers that Spark then reuses."""

    def warm(batches: Iterator[Any]) -> Iterator[Any]:
        engines.warm(engine)
        yield from batches

    return warm


def make_featurize(
    payload: Any,
    key: str,
    engine: str,
    batch_size: int,
    images_done: Any,
    worker_rss_mb: Any,
    gather: bool = False,
    reader: reading.FileReader | None = None,
) -> Partition:
    """The featurizing `mapInArrow` function: a partition's batches of files -> their staged
    rows (STAGED_SCHEMA). With a `reader`, the worker reads the files (the batches have no
    `content`), the next batch's while it featurizes one.

    `payload` is a Broadcast of the engine bytes; `images_done` a counting accumulator
    (progress); `worker_rss_mb` a max accumulator (peak worker memory). With `gather`, a
    task also sums its rows for the PCA (reduce.Moments) and yields them at its end as a
    SideFile (MOMENTS_SUFFIX), which arrow_files.write_parts commits with the task's staged
    part: kept only if the task succeeds, replaced if it is retried.
    """

    def featurize(batches: Iterator[Any]) -> Iterator[Any]:
        predictor = cached_predictor(
            key, lambda: engines.load(engine, payload.value, threads=_task_cpus())
        )
        sums = reduce.Moments(FEATURE_DIM) if gather else None
        read = reader.ahead(batches) if reader is not None else ((b, None) for b in batches)
        for batch, reads in read:
            yield featurize_batch(batch, predictor, batch_size, sums, reads)
            images_done.add(batch.num_rows)
        worker_rss_mb.add(peak_rss_mb() or 0.0)
        if sums is not None and sums.count:
            yield arrow_files.SideFile(MOMENTS_SUFFIX, sums.to_bytes())

    return featurize
