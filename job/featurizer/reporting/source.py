"""A run's output folder, read with pyarrow (local path, file://, s3://, s3a://): no Spark.

S3 settings follow the job's: the endpoint from AWS_ENDPOINT_URL (and friends, see
storage.s3_endpoint) with path-style addressing, credentials from the AWS default chain.
When the run's SparkSession is at hand, its S3A settings (endpoint, keys given with
--conf spark.hadoop.fs.s3a.*) take precedence so the report reads what the run wrote.
"""

from __future__ import annotations

import json
import os
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from featurizer import storage
from featurizer.errors import ConfigError

SPARK_S3A_KEYS = {
    "endpoint": "fs.s3a.endpoint",
    "access_key": "fs.s3a.access.key",
    "secret_key": "fs.s3a.secret.key",
    "session_token": "fs.s3a.session.token",
    "region": "fs.s3a.endpoint.region",
}


@dataclass(frozen=True)
class Location:
    """A pyarrow FileSystem and the path of the output folder inside it."""

    fs: Any
    path: str
    uri: str

    def child(self, name: str) -> str:
        return f"{self.path.rstrip('/')}/{name}"

    def exists(self, name: str) -> bool:
        from pyarrow import fs

        return self.fs.get_file_info(self.child(name)).type != fs.FileType.NotFound

    def read_bytes(self, name: str) -> bytes:
        with self.fs.open_input_stream(self.child(name)) as stream:
            return stream.read()

    def write_bytes(self, name_or_path: str, data: bytes, absolute: bool = False) -> None:
        path = name_or_path if absolute else self.child(name_or_path)
        parent = path.rsplit("/", 1)[0]
        if parent:
            self.fs.create_dir(parent, recursive=True)
        with self.fs.open_output_stream(path) as stream:
            stream.write(data)


def locate(uri: str, spark: Any = None) -> Location:
    """The pyarrow file system for an output URI."""
    normalized = storage.normalize(uri)
    local = storage.local_path(normalized)
    if local is not None:
        from pyarrow import fs

        return Location(fs.LocalFileSystem(), local, normalized)
    scheme = storage.scheme_of(normalized)
    if scheme not in storage.S3_SCHEMES:
        raise ConfigError(f"{uri}: the report reads local paths and s3:// or s3a:// URIs only")
    return Location(s3_filesystem(spark), normalized.split("://", 1)[1], normalized)


def s3_options(
    env: dict[str, str] | os._Environ = os.environ, spark_conf: dict[str, str] | None = None
) -> dict[str, Any]:
    """pyarrow.fs.S3FileSystem arguments from the job's S3 settings."""
    spark_conf = spark_conf or {}
    endpoint = spark_conf.get("endpoint") or storage.s3_endpoint(env)
    options: dict[str, Any] = {}
    region = spark_conf.get("region") or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    if region:
        options["region"] = region
    if endpoint:
        scheme, _, host = endpoint.rpartition("://")
        options["endpoint_override"] = host or endpoint
        options["scheme"] = scheme or "https"
        options.setdefault("region", "us-east-1")
    if spark_conf.get("access_key") and spark_conf.get("secret_key"):
        options["access_key"] = spark_conf["access_key"]
        options["secret_key"] = spark_conf["secret_key"]
        if spark_conf.get("session_token"):
            options["session_token"] = spark_conf["session_token"]
    return options


def _spark_s3a(spark: Any) -> dict[str, str]:
    if spark is None:
        return {}
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    return {name: value for name, key in SPARK_S3A_KEYS.items() if (value := conf.get(key))}


def s3_filesystem(spark: Any = None) -> Any:
    from pyarrow import fs

    return fs.S3FileSystem(**s3_options(spark_conf=_spark_s3a(spark)))


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


# Vectors of at most this many rows are read (a deterministic sample by path): the report's
# memory stays ~0.2 GB however big the output (all paths and labels are still read).
MAX_VECTOR_ROWS = 20_000


def load(uri: str, spark: Any = None, max_vector_rows: int = MAX_VECTOR_ROWS) -> RunOutput:
    """Read manifest.json, features/ and errors/ (one clear error when it is not an output)."""
    location = locate(uri, spark)
    try:
        manifest = json.loads(location.read_bytes("manifest.json"))
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
        dataset = _dataset(location, "features")
        names = dataset.to_table(columns=["path", "label"], use_threads=False)
        paths = np.array(names.column("path").to_pylist(), dtype=object)
        labels = np.array(names.column("label").to_pylist(), dtype=object)
        rows = sample_rows(paths, max_vector_rows)
        pca, features = _vectors(dataset, rows, ["pca", "features"])
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
    )


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


def _vectors(dataset: Any, rows: np.ndarray, columns: list[str]) -> list[np.ndarray | None]:
    """The vector columns of rows `rows`, read batch by batch (never the whole column)."""
    present = [c for c in columns if c in dataset.schema.names]
    parts: dict[str, list[np.ndarray]] = {c: [] for c in present}
    start = 0
    for batch in dataset.to_batches(columns=present, use_threads=False):
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
    values = table.column(column)
    if hasattr(values, "combine_chunks"):  # a Table's ChunkedArray
        values = values.combine_chunks()
    width = len(values[0].as_py())
    flat = values.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    if flat.size != width * table.num_rows:
        raise ConfigError(f"features/ column {column} has vectors of different lengths")
    return flat.reshape(table.num_rows, width)
