"""A run's output folder, read with pyarrow (local path, file://, s3://, s3a://): no Spark.

The file systems and their S3 settings are arrow_files' (the same the job's workers write
with): when the run's SparkSession is at hand, the report reads what the run wrote.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from featurizer import output, vectors
from featurizer.arrow_files import Location, locate
from featurizer.errors import ConfigError


@dataclass
class RunOutput:
    """What the report needs from an output folder."""

    location: Location
    manifest: dict
    paths: np.ndarray  # (n,) object: every featurized row
    labels: np.ndarray  # (n,) object
    vector_rows: np.ndarray  # (m,) indices of the rows whose vectors were read
    pca: np.ndarray | None  # (m, k) float32, rows `vector_rows`
    features: np.ndarray | None  # (m, 1280) float32
    errors: list[str]  # one reason per failed file
    complete: bool  # _SUCCESS present
    explained_variance_png: bytes | None = None  # the run's own chart, when it wrote one


# Vectors of at most this many rows are read (a deterministic sample by path): the report's
# memory stays ~0.2 GB however big the output (all paths and labels are still read).
MAX_VECTOR_ROWS = 20_000


def load(uri: str, spark: Any = None, max_vector_rows: int = MAX_VECTOR_ROWS) -> RunOutput:
    """Read manifest.json, features/ and errors/ (one clear error when it is not an output)."""
    location = locate(uri, spark)
    try:
        manifest = json.loads(location.read_bytes(output.MANIFEST))
    except FileNotFoundError:
        raise ConfigError(
            f"{location.uri} has no manifest.json: is it a featurizer output "
            f"(the --output of a finished `featurizer run`)?"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read {location.uri}: {exc}") from None
    paths = labels = pca = features = None
    rows = np.array([], dtype=np.int64)
    if location.exists("features"):
        paths, labels, rows, pca, features = _features(
            _dataset(location, "features"), max_vector_rows
        )
    errors = []
    if location.exists("errors"):
        errors = _read_table(location, "errors", ["error"]).column("error").to_pylist()
    empty = np.array([], dtype=object)
    return RunOutput(
        location,
        manifest,
        empty if paths is None else paths,
        empty if labels is None else labels,
        rows,
        pca,
        features,
        [e or "unknown" for e in errors],
        location.exists("_SUCCESS"),
        _optional_bytes(location, output.EXPLAINED_VARIANCE_PNG),
    )


def _optional_bytes(location: Location, name: str) -> bytes | None:
    try:
        return location.read_bytes(name)
    except FileNotFoundError:
        return None


def _dataset(location: Location, name: str) -> Any:
    import pyarrow.dataset as ds

    return ds.dataset(
        location.child(name),
        format="parquet",
        filesystem=location.fs,
        exclude_invalid_files=False,
        ignore_prefixes=["_", "."],
    )


def _read_table(location: Location, name: str, columns: list[str]) -> Any:
    dataset = _dataset(location, name)
    present = [c for c in columns if c in dataset.schema.names]
    return dataset.to_table(columns=present)


def sample_rows(paths: np.ndarray, limit: int) -> np.ndarray:
    """Sorted indices of at most `limit` rows, chosen by a hash of the path (the same rows
    on every run, independent of file order)."""
    if len(paths) <= limit:
        return np.arange(len(paths))
    keys = np.array([zlib.crc32(str(p).encode()) for p in paths], dtype=np.uint64)
    return np.sort(np.argsort(keys, kind="stable")[:limit])


Matrix = np.ndarray | None  # (rows, width) float32, or None when the output lacks the column


def _features(
    dataset: Any, limit: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, Matrix, Matrix]:
    """Paths and labels of every row; `pca` and `features` of at most `limit` rows."""
    if dataset.count_rows() <= limit:  # the usual case: one threaded pass over everything
        present = [c for c in ("pca", "features") if c in dataset.schema.names]
        table = dataset.to_table(columns=["path", "label", *present])
        paths, labels = _strings(table, "path"), _strings(table, "label")
        rows = np.arange(len(paths))
        return paths, labels, rows, _matrix(table, "pca"), _matrix(table, "features")
    names = dataset.to_table(columns=["path", "label"])
    paths, labels = _strings(names, "path"), _strings(names, "label")
    rows = sample_rows(paths, limit)
    pca, features = _vectors(dataset, rows, ["pca", "features"])
    return paths, labels, rows, pca, features


def _strings(table: Any, column: str) -> np.ndarray:
    return np.array(table.column(column).to_pylist(), dtype=object)


def _vectors(dataset: Any, rows: np.ndarray, columns: list[str]) -> list[np.ndarray | None]:
    """The vector columns of rows `rows`, read batch by batch (never the whole column)."""
    present = [c for c in columns if c in dataset.schema.names]
    parts: dict[str, list[np.ndarray]] = {c: [] for c in present}
    start = 0
    for batch in dataset.to_batches(columns=present):
        end = start + batch.num_rows
        wanted = rows[(rows >= start) & (rows < end)] - start
        if len(wanted):
            taken = batch.take(wanted)
            for column in present:
                matrix = _matrix(taken, column)
                if matrix is not None:
                    parts[column].append(matrix)
        start = end
    return [np.concatenate(parts[c]) if c in parts and parts[c] else None for c in columns]


def _matrix(table: Any, column: str) -> np.ndarray | None:
    """A list<float> column as an (n, d) float32 matrix, without a Python loop."""
    if column not in table.column_names or table.num_rows == 0:
        return None
    try:
        return vectors.unpack(table.column(column))
    except ValueError as exc:
        raise ConfigError(f"features/ column {column}: {exc}") from None
