"""Files through pyarrow (local paths, file://, s3://, s3a://): the report's reads and the
workers' Parquet writes, without the JVM.

S3 settings follow the job's: the endpoint from AWS_ENDPOINT_URL (and friends, see
storage.s3_endpoint) with path-style addressing, credentials from the AWS default chain
(env, profile, IRSA web identity, container credentials). When the run's SparkSession is at
hand, its S3A settings (endpoint, keys given with --conf spark.hadoop.fs.s3a.*) take
precedence so that pyarrow reads and writes what Spark does.

Why workers write the output's Parquet themselves (`write_parts`): Spark's writer copies
every float of every `array<float>` out of Arrow into its rows and then encodes each one
with its repetition and definition levels, ~0.5 ms per 1,330-float row on one core (7,000
rows: 3.5-4.3 s of JVM time); pyarrow writes the same rows from the Arrow batch in 0.20 s.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from featurizer import storage
from featurizer.errors import ConfigError

T = TypeVar("T")
R = TypeVar("R")
# Object reads in flight at once on S3, where each waits on the network (tens of ms a request
# on S3), e.g. the end of a run's per-task files: a 90,380-image run on 16 cores leaves 192.
S3_READS = 8

SPARK_S3A_KEYS = {
    "endpoint": "fs.s3a.endpoint",
    "access_key": "fs.s3a.access.key",
    "secret_key": "fs.s3a.secret.key",
    "session_token": "fs.s3a.session.token",
    "region": "fs.s3a.endpoint.region",
}
# S3A credential providers whose credentials pyarrow finds too (the AWS SDK's default chain,
# or the keys _spark_s3a passes on): with any other one (or an assumed role), Spark writes.
SAME_CREDENTIALS = frozenset(
    {
        "DefaultCredentialsProvider",
        "TemporaryAWSCredentialsProvider",
        "SimpleAWSCredentialsProvider",
        "EnvironmentVariableCredentialsProvider",
        "SystemPropertyCredentialsProvider",
        "ProfileCredentialsProvider",
        "WebIdentityTokenFileCredentialsProvider",
        "ContainerCredentialsProvider",
        "InstanceProfileCredentialsProvider",
        "IAMInstanceCredentialsProvider",
    }
)
TEMPORARY = "_temporary"  # the attempts' files, under the folder written; removed at the end
# How long a failed write waits for its job's other tasks, killed asynchronously, to end (and
# then for their Python workers, which outlive a killed task by up to Spark's
# spark.python.task.killTimeout) before it removes _temporary/ for good.
SETTLE_SECONDS = 60.0
STRAGGLER_SECONDS = 2.0
ROW_GROUP_ROWS = 8192  # ~45 MB of 1,330 floats a row: few row groups, bounded worker memory


@dataclass(frozen=True)
class Location:
    """A pyarrow FileSystem and the path of a folder inside it."""

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

    @property
    def remote(self) -> bool:
        return self.fs.type_name != "local"

    def each(self, read: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        """read(item) for each item, in order: on S3, S3_READS at once and at most that many
        results ahead of the caller (memory stays bounded); locally one after another."""
        if not self.remote:
            yield from map(read, items)
            return
        with ThreadPoolExecutor(S3_READS, thread_name_prefix="s3-read") as pool:
            pending: deque[Future[R]] = deque()
            for item in items:
                pending.append(pool.submit(read, item))
                if len(pending) == S3_READS:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()

    def write_bytes(self, name_or_path: str, data: bytes, absolute: bool = False) -> None:
        path = name_or_path if absolute else self.child(name_or_path)
        self.make_parent(path)
        with self.fs.open_output_stream(path) as stream:
            stream.write(data)

    def make_parent(self, path: str) -> None:
        parent = path.rsplit("/", 1)[0]
        if parent:
            self.fs.create_dir(parent, recursive=True)


def locate(uri: str, spark: Any = None) -> Location:
    """The pyarrow file system for a URI."""
    normalized = storage.normalize(uri)
    local = storage.local_path(normalized)
    if local is not None:
        from pyarrow import fs

        return Location(fs.LocalFileSystem(), local, normalized)
    scheme = storage.scheme_of(normalized)
    if scheme not in storage.S3_SCHEMES:
        raise ConfigError(f"{uri}: pyarrow reaches local paths and s3:// or s3a:// URIs only")
    return Location(s3_filesystem(spark), normalized.split("://", 1)[1], normalized)


def reachable(uri: str, spark: Any = None) -> bool:
    """True when pyarrow can write `uri` with the credentials Spark would use: a local path,
    or S3 without a credentials provider only S3A knows (else Spark's writer is used)."""
    scheme = storage.scheme_of(storage.normalize(uri))
    if scheme == "file":
        return True
    if scheme not in storage.S3_SCHEMES:
        return False
    if spark is None:
        return True
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    providers = (conf.get("fs.s3a.aws.credentials.provider") or "").replace(",", " ").split()
    known = all(provider.rsplit(".", 1)[-1] in SAME_CREDENTIALS for provider in providers)
    return known and not conf.get("fs.s3a.assumed.role.arn")


def s3_options(
    env: Mapping[str, str] = os.environ, spark_conf: dict[str, str] | None = None
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

    return fs.S3FileSystem(**s3_options(spark_conf=_spark_s3a(spark)), **_s3a_patience(spark))


def _s3a_patience(spark: Any) -> dict[str, Any]:
    """S3A's timeouts and retries (its settings, or Hadoop's defaults) for pyarrow's
    requests: a stalled request waits and is retried as long as S3A's would. S3A retries an
    operation (fs.s3a.retry.limit) whose SDK client retried each request
    (fs.s3a.attempts.maximum): pyarrow's one client gets the product of the attempts."""
    if spark is None:
        return {}
    from pyarrow import fs

    conf = spark.sparkContext._jsc.hadoopConfiguration()
    millis = spark.sparkContext._jvm.java.util.concurrent.TimeUnit.MILLISECONDS
    attempts = (conf.getInt("fs.s3a.attempts.maximum", 5) + 1) * (
        conf.getInt("fs.s3a.retry.limit", 7) + 1
    )
    return {
        "connect_timeout": conf.getTimeDuration(
            "fs.s3a.connection.establish.timeout", 30_000, millis
        )
        / 1000,
        "request_timeout": conf.getTimeDuration("fs.s3a.connection.timeout", 200_000, millis)
        / 1000,
        "retry_strategy": fs.AwsStandardS3RetryStrategy(max_attempts=attempts),
    }


@dataclass(frozen=True)
class SideFile:
    """What a partition function given to `write_parts` may yield besides its batches: bytes
    committed with the task's part file, as `_<part file>.<suffix>` (a leading `_` hides it
    from Parquet readers), so they exist exactly when the part does and a retried task's
    replace its predecessor's. The driver reads them with `side_files`."""

    suffix: str
    data: bytes


# A partition's pyarrow RecordBatches -> the RecordBatches written (a mapInArrow function);
# inside `write_parts`, SideFiles too.
Partition = Callable[[Iterator[Any]], Iterator[Any]]


def write_parts(
    df: Any,
    uri: str,
    partition: Partition,
    schema: Any,
    plain: Iterable[str] = (),
    row_group_rows: int = ROW_GROUP_ROWS,
    page_rows: int | None = None,
) -> int:
    """Write `df` as Parquet under `uri` (replacing it) from the Python workers, each
    partition's Arrow batches passed through `partition`; `schema` is the Spark schema of
    what it gives. One file per partition, part-NNNNN.parquet: each task attempt writes its
    file under _temporary/ and then moves it to its final name, so a failed attempt leaves
    no part file and a retried one replaces its predecessor's (same rows: the same file);
    the SideFiles `partition` yields go the same way. `plain` columns are written without
    dictionary encoding (float vectors never repeat); a worker holds up to `row_group_rows`
    rows before it writes them, and pages of at most `page_rows` rows if given (pyarrow's
    default: ~1 MB). Returns the number of rows written."""
    spark = df.sparkSession
    location = locate(uri, spark)
    fs, folder = location.fs, location.path
    temporary = f"{folder}/{TEMPORARY}"
    _remove(location, folder)
    fs.create_dir(temporary, recursive=True)
    empty = _arrow_schema(schema, spark)
    plain = frozenset(plain)

    def write_partition(batches: Iterator[Any]) -> Iterator[Any]:  # in a Python worker
        import pyarrow as pa
        import pyarrow.parquet as pq
        from pyspark import TaskContext

        context = TaskContext.get()
        assert context is not None  # a task's
        name = f"part-{context.partitionId():05d}.parquet"
        attempt = f"{temporary}/{context.attemptNumber()}-{uuid.uuid4().hex}"
        rows, writer = 0, None
        pending: list[Any] = []
        sides: list[str] = []
        # Not recursive: a task of a job that failed meanwhile finds _temporary/ removed and
        # stops here instead of creating it again.
        fs.create_dir(attempt, recursive=False)

        def flush() -> None:
            nonlocal writer
            table = pa.Table.from_batches(pending)
            if writer is None:
                dictionary = [n for n in table.schema.names if n not in plain]
                writer = pq.ParquetWriter(
                    f"{attempt}/{name}",
                    table.schema,
                    filesystem=fs,
                    compression="snappy",
                    use_dictionary=dictionary,
                    **({"max_rows_per_page": page_rows} if page_rows else {}),
                )
            writer.write_table(table)
            pending.clear()

        try:
            for batch in partition(batches):
                if isinstance(batch, SideFile):
                    sides.append(f"_{name}.{batch.suffix}")
                    with fs.open_output_stream(f"{attempt}/{sides[-1]}") as stream:
                        stream.write(batch.data)
                elif batch.num_rows:
                    pending.append(batch)
                    rows += batch.num_rows
                    if sum(b.num_rows for b in pending) >= row_group_rows:
                        flush()
            if pending:
                flush()
        except BaseException:
            with contextlib.suppress(Exception):  # the task's own error is the one to report
                if writer is not None:
                    writer.close()
            with contextlib.suppress(Exception):
                fs.delete_dir(attempt)  # the failed attempt's half file
            raise
        for side in sides:
            fs.move(f"{attempt}/{side}", f"{folder}/{side}")
        if writer is not None:
            writer.close()
            fs.move(f"{attempt}/{name}", f"{folder}/{name}")
        fs.delete_dir(attempt)
        yield pa.RecordBatch.from_pydict({"rows": [rows]})

    context = spark.sparkContext
    tag = f"featurizer-write-{uuid.uuid4().hex}"
    context.addJobTag(tag)
    try:
        written = df.mapInArrow(write_partition, "rows long").groupBy().sum("rows").first()[0]
    except BaseException:
        with contextlib.suppress(Exception):  # e.g. a stopped SparkContext: the error stays
            _settle(context, tag, location, temporary)
        raise
    finally:
        context.removeJobTag(tag)
    _remove(location, temporary)
    if not written:  # no task wrote a file: one without rows keeps the columns for readers
        _write_empty(location, empty)
    location.write_bytes("_SUCCESS", b"")  # what Spark's committer leaves: readers may look
    return int(written or 0)


def side_files(uri: str, suffix: str, spark: Any = None) -> Iterator[bytes]:
    """The contents of the SideFiles of `suffix` that `write_parts` committed anywhere under
    `uri`, one at a time (Location.each: read several at once on S3)."""
    location = locate(uri, spark)

    def read(path: str) -> bytes:
        with location.fs.open_input_stream(path) as stream:
            return stream.read()

    yield from location.each(
        read,
        [
            info.path
            for info in _files_under(location)
            if info.base_name.startswith("_part-")
            and info.base_name.endswith(f".{suffix}")
            and TEMPORARY not in info.path
        ],
    )


def parquet_files(location: Location) -> list[tuple[str, int]]:
    """(path, size) of the data files Spark would read under `location`: none in a folder or
    file whose name starts with `_` or `.` (_temporary/, _SUCCESS, side files)."""
    root = location.path.rstrip("/")
    found = []
    for info in _files_under(location):
        relative = info.path[len(root) :].strip("/").split("/")
        if not any(name.startswith(("_", ".")) for name in relative):
            found.append((info.path, info.size))
    return found


def _files_under(location: Location) -> list[Any]:
    """pyarrow FileInfo of every file under `location` (none if it does not exist)."""
    from pyarrow import fs

    if location.fs.get_file_info(location.path).type == fs.FileType.NotFound:
        return []
    selector = fs.FileSelector(location.path, recursive=True)
    return [i for i in location.fs.get_file_info(selector) if i.type == fs.FileType.File]


def write_empty(uri: str, schema: Any, spark: Any) -> None:
    """A Parquet folder of no rows with the columns of `schema` (a Spark schema), as Spark
    writes an empty DataFrame, without a Spark job."""
    location = locate(uri, spark)
    _remove(location, location.path)
    _write_empty(location, _arrow_schema(schema, spark))
    location.write_bytes("_SUCCESS", b"")


def _write_empty(location: Location, schema: Any) -> None:
    import pyarrow.parquet as pq

    location.make_parent(location.child("part-00000.parquet"))
    pq.ParquetWriter(location.child("part-00000.parquet"), schema, filesystem=location.fs).close()


def _arrow_schema(schema: Any, spark: Any) -> Any:
    """The Arrow schema Spark gives a mapInArrow function for `schema` (timestamps in the
    session's time zone; Spark 3.5, the EMR image's, always uses UTC and takes no zone)."""
    from pyspark.sql.pandas.types import to_arrow_schema

    try:
        return to_arrow_schema(schema, timezone=spark.conf.get("spark.sql.session.timeZone"))
    except TypeError:
        return to_arrow_schema(schema)


def _settle(context: Any, tag: str, location: Location, temporary: str) -> None:
    """After a failed write: wait (bounded) until no task of the jobs tagged `tag` runs any
    more, then remove `temporary`, and once more after the stragglers' Python workers had
    their time. A failed job's other tasks are killed asynchronously: removed at once,
    _temporary/ would get their files again."""
    tracker = context.statusTracker()
    stages = [
        stage
        for job in context._jsc.sc().statusTracker().getJobIdsForTag(tag)
        if (info := tracker.getJobInfo(job)) is not None
        for stage in info.stageIds
    ]
    deadline = time.monotonic() + SETTLE_SECONDS
    while time.monotonic() < deadline and any(
        (info := tracker.getStageInfo(stage)) is not None and info.numActiveTasks > 0
        for stage in stages
    ):
        time.sleep(0.1)
    _remove(location, temporary)
    time.sleep(STRAGGLER_SECONDS)
    _remove(location, temporary)


def _remove(location: Location, path: str) -> None:
    from pyarrow import fs

    if location.fs.get_file_info(path).type != fs.FileType.NotFound:
        location.fs.delete_dir(path)
