"""Where the images come from: folders of image files, or packed Parquet shards of them.

A source lists its images (counting them, failing early on a bad input), streams them as rows
of `path, label, length, modificationTime, content` in micro-batches, and gives a sample for
calibrating reduced-precision engines. The rest of the run does not know what a "file" is.

- `FileSource`: folders of JPEG/PNG files (Spark's binaryFile), the label the parent folder.
  Listed on the driver; a local input is walked first (local_input.py). Where the Python
  workers read the files, the stream takes the listing's paths from a queue of Parquet files
  (`enqueue`) rather than the input folder itself (Spark's file stream stats every file of a
  micro-batch again on the driver: one request per object in S3, one after another).
- `PackedSource`: Parquet files whose rows hold the image bytes plus path and label columns:
  what `featurizer pack` writes, and the layout img2dataset and Hugging Face dataset exports
  use (column names are options). ~1,000 images per object instead of one: at scale that is
  ~1,000x fewer S3 requests and LIST pages.
"""

from __future__ import annotations

import functools
import json
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from featurizer import arrow_files, errors, images, reading, storage
from featurizer.config import RunConfig
from featurizer.errors import ConfigError

IMAGE_GLOB = (
    "*.{"
    + ",".join("".join(f"[{c}{c.upper()}]" for c in ext) for ext in images.IMAGE_EXTENSIONS)
    + "}"
)
BINARY_SCHEMA = "path string, modificationTime timestamp, length long, content binary"
QUEUE_SCHEMA = "path string"  # a queue file's rows (FileSource.enqueue)
# A stream's rows: an image's name and bytes. `content` may be left out: the Python workers
# then read the files themselves (FileSource.reader).
FILE_COLUMNS = ("path", "label", "length", "modificationTime", "content")
PACK_MARKER = "_pack.json"  # written by `featurizer pack` (Spark skips _ names)
IMAGES_PER_SHARD = 1000


@dataclass
class Listing:
    """What the input holds, as far as the run needs to know before featurizing. No Python
    object per file: the paths stay in the JVM, or in a local walk's Parquet files."""

    found: int
    aliases: set[str] = field(default_factory=set)  # reached again through links: skipped
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    walked: str | None = None  # a local walk's folder of Parquet files of its paths
    frame: Callable[[], Any] | None = None  # makes `paths`, when first needed

    @functools.cached_property
    def paths(self) -> Any:
        """FileSource: a DataFrame of `path` (Spark's spelling), aliases left out."""
        return self.frame() if self.frame else None


def spark_path(uri: Any) -> Any:
    """inputFiles() gives URI-encoded strings; binaryFile's `path` column is decoded, and
    local files read `file:/x` rather than `file:///x` (a Column; url_decode would read `+`
    as a space, so a literal `+` is protected first)."""
    from pyspark.sql import functions as F

    decoded = F.url_decode(F.replace(uri, F.lit("+"), F.lit("%2B")))
    local = F.concat(F.lit("file:/"), decoded.substr(len("file:///") + 1, 1 << 30))
    return F.when(decoded.startswith("file:///"), local).otherwise(decoded)


def _scala_seq(jvm: Any, array: Any) -> Any:
    """A Java array as a Scala Seq, without a copy or a Py4J call per element. Py4J passes
    an array only to a parameter typed Object, so the wrappers taking one: Scala 2.13's
    (Spark 4) or, where that class does not exist (py4j then returns a package, not callable),
    Scala 2.12's (Spark 3.5, the EMR image)."""
    try:
        return jvm.scala.collection.immutable.ArraySeq.unsafeWrapArray(array)
    except TypeError:
        return jvm.scala.collection.mutable.WrappedArray.make(array)


def _frame_of(spark: Any, folder: str) -> Any:
    """A DataFrame of the `path`s in a local walk's files. Spark 4 takes an Arrow table;
    Spark 3.5 (the EMR image) takes pandas, through Arrow when enabled."""
    import pyarrow.parquet as pq
    import pyspark

    table = pq.read_table(folder)
    if int(pyspark.__version__.split(".")[0]) < 4:
        return spark.createDataFrame(table.to_pandas(), QUEUE_SCHEMA)
    return spark.createDataFrame(table, QUEUE_SCHEMA)


def _copy_queue(folder: str, queue: arrow_files.Location) -> None:
    """A local walk's Parquet files (local_input.scan: `per_file` paths each, in the walk's
    order) copied into the queue, each under a hidden name and then renamed: no half file is
    ever in the queue."""
    tag = uuid.uuid4().hex
    for name in sorted(os.listdir(folder)):
        final = f"{name.removesuffix('.parquet')}-{tag}.parquet"
        with open(os.path.join(folder, name), "rb") as source:
            queue.write_bytes(f".{final}", source.read())
        queue.fs.move(queue.child(f".{final}"), queue.child(final))


def label_of(path: Any) -> Any:
    """The label column: the parent folder's exact name (a Spark Column)."""
    from pyspark.sql import functions as F

    return F.element_at(F.split(path, "/"), -2)


class FileSource:
    """Folders of image files, found recursively."""

    accounts_unread = True  # zero-byte and vanished files are recorded as errors

    def __init__(self, uri: str, scan: Any) -> None:
        self.uri, self.scan = uri, scan
        self._reader: tuple[reading.FileReader | None] | None = None  # reader(), once

    def reader(self, spark: Any) -> reading.FileReader | None:
        """How the Python workers read the files themselves, or None when the JVM must
        (binaryFile's `content`): that costs the JVM a copy of every image into its rows,
        into Arrow and over the worker's socket (BENCHMARKS.md, eighth round), and S3A
        reads a task's objects one after another. Local files, and S3 with credentials
        pyarrow finds as S3A does (arrow_files.reachable), are read by the workers. Decided
        once per source (a run's)."""
        if self._reader is None:
            if storage.scheme_of(self.uri) == "file":
                self._reader = (reading.FileReader(),)
            elif arrow_files.reachable(self.uri, spark):
                self._reader = (reading.FileReader(arrow_files.s3_filesystem(spark)),)
            else:
                self._reader = (None,)
        return self._reader[0]

    def listing(self, spark: Any) -> Listing:
        """A local folder's walk (local_input.scan) if it wrote its paths, else Spark's own
        listing (the file index)."""
        if self.scan.files is not None:
            return self._walked(spark)
        return self._listed(spark)

    def _walked(self, spark: Any) -> Listing:
        """The local walk's paths. Only a run that needs them as a DataFrame (resumed,
        incremental, calibrating, or missing a staged row) reads them, handed to Spark as
        Arrow (the batches stay in the JVM as bytes: no Python object or Py4J call a file)."""
        if not self.scan.listed:
            raise ConfigError(f"no images (.jpg, .jpeg, .png) found under {self.uri}")
        folder = self.scan.files
        return Listing(
            found=self.scan.listed + len(self.scan.unreadable),
            aliases=set(self.scan.aliases),
            unreadable=list(self.scan.unreadable),
            walked=folder,
            frame=lambda: _frame_of(spark, folder),
        )

    def _listed(self, spark: Any) -> Listing:
        """Spark's own listing. Its paths go from the JVM's array straight into a
        DataFrame: passing them to Python cost ~390 B and ~66 us per file (BENCHMARKS.md,
        "Driver memory and listing time")."""
        from pyspark.sql import DataFrame
        from pyspark.sql import functions as F

        try:
            uris = (
                spark.read.format("binaryFile")
                .option("recursiveFileLookup", "true")
                .option("pathGlobFilter", IMAGE_GLOB)
                .load(self.uri)
                ._jdf.inputFiles()  # a Java String[], left in the JVM
            )
        except Exception as exc:
            raise ConfigError(f"cannot read input {self.uri}: {errors.cause(exc)}") from None
        count = len(uris)
        if not count:
            raise ConfigError(f"no images (.jpg, .jpeg, .png) found under {self.uri}")
        jvm = spark.sparkContext._jvm
        dataset = spark._jsparkSession.createDataset(
            _scala_seq(jvm, uris), jvm.org.apache.spark.sql.Encoders.STRING()
        )
        listed = DataFrame(dataset.toDF(), spark).select(spark_path(F.col("value")).alias("path"))
        aliases: set[str] = set()
        if self.scan.aliases:  # a local input's links: the scan knows them, few
            known = spark.createDataFrame([(path,) for path in self.scan.aliases], "path string")
            aliases = {row.path for row in listed.join(known, "path", "left_semi").collect()}
            listed = listed.join(F.broadcast(known), "path", "left_anti")
        return Listing(
            found=count - len(aliases) + len(self.scan.unreadable),
            frame=lambda: listed,
            aliases=aliases,
            unreadable=list(self.scan.unreadable),
        )

    def queues(self, reader: reading.FileReader | None, limit: int | None) -> bool:
        """Whether the stream takes its files from a queue of the listing's paths (`enqueue`):
        when the workers read the files, as the queue carries no `content`, and without
        --limit, which takes the oldest files (a queue knows paths, not times)."""
        return reader is not None and limit is None

    def enqueue(self, spark: Any, listing: Listing, queue: str, per_file: int, known: Any) -> None:
        """Append to the Parquet files under `queue` the listed paths not queued before (a
        resumed run's queue stays as it was) nor `known` (the paths an output already holds:
        an --incremental run's); in path order (a fresh run over a local walk: in the walk's),
        `per_file` paths a file (RunConfig.queue_file_paths), which the stream takes a
        micro-batch's number at a time."""
        store = storage.Storage(spark)
        store.mkdirs(queue)  # the stream's folder, even when nothing is new
        queued = any(name.endswith(".parquet") for name in store.list_names(queue))
        fresh = not queued and known is None
        if fresh and listing.walked is not None and arrow_files.reachable(queue, spark):
            # a fresh run over a local walk: the walk's files are the queue, no Spark job
            _copy_queue(listing.walked, arrow_files.locate(queue, spark))
            return
        if fresh:  # every listed path, in one sorted task
            new = listing.paths.coalesce(1).sortWithinPartitions("path")
            new.write.mode("append").option("maxRecordsPerFile", per_file).parquet(queue)
            return
        new = listing.paths
        if queued:
            new = new.join(spark.read.schema(QUEUE_SCHEMA).parquet(queue), "path", "left_anti")
        if known is not None:
            new = new.join(known, "path", "left_anti")
        new = new.repartition(1).sortWithinPartitions("path").cache()
        try:
            if new.count():  # no empty queue file: it would be an empty micro-batch
                new.write.mode("append").option("maxRecordsPerFile", per_file).parquet(queue)
        finally:
            new.unpersist()

    def stream(
        self, spark: Any, per_trigger: int, queue: str | None = None, queue_files: int = 1
    ) -> Any:
        """The files as rows, `per_trigger` a micro-batch: from the input folder, or from
        the `queue` of their paths (`enqueue`), `queue_files` of its files a micro-batch."""
        from pyspark.sql import functions as F

        if queue is not None:
            paths = (
                spark.readStream.schema(QUEUE_SCHEMA)
                .option("maxFilesPerTrigger", queue_files)
                .option("maxFileAge", "36500d")
                .parquet(queue)
            )
            return paths.select(
                "path",
                label_of("path").alias("label"),
                F.lit(None).cast("long").alias("length"),
                F.lit(None).cast("timestamp").alias("modificationTime"),
            )
        if storage.scheme_of(self.uri) == "file":
            # Local listings are fast: list on the driver instead of launching a listing job.
            spark.conf.set("spark.sql.sources.parallelPartitionDiscovery.threshold", "1000000")
        files = (
            spark.readStream.format("binaryFile")
            .schema(BINARY_SCHEMA)
            .option("recursiveFileLookup", "true")
            .option("pathGlobFilter", IMAGE_GLOB)
            .option("maxFilesPerTrigger", per_trigger)
            .option("maxFileAge", "36500d")  # never skip old files
            .load(self.uri)
        )
        # Without `content` selected, binaryFile only stats each file (ignoreMissingFiles
        # still skips vanished ones) and never opens it: the workers read it (`reader`).
        content = () if self.reader(spark) is not None else ("content",)
        return files.select(
            "path", label_of("path").alias("label"), "length", "modificationTime", *content
        )

    def samples(
        self, spark: Any, store: storage.Storage, listing: Listing, count: int
    ) -> list[tuple[str, bytes]]:
        """Up to `count` images picked by a hash of their path (deterministic, spread over
        the class folders, chosen in Spark); files gone since the listing are passed over."""
        from pyspark.sql import functions as F

        chosen = [
            row.path
            for row in listing.paths.orderBy(F.xxhash64("path"), "path").limit(count).collect()
        ]
        reader = self.reader(spark)
        if reader is not None:  # read here (S3: many at once), not one Py4J round trip each
            contents, _ = reader.read(chosen)
            return [(path, data) for path, data in zip(chosen, contents) if data is not None]
        found = []
        for path in chosen:
            try:
                found.append((path, store.read_bytes(path)))
            except Exception:  # vanished since the listing
                continue
        return found


@dataclass(frozen=True)
class Columns:
    path: str
    label: str
    content: str


class PackedSource:
    """Parquet files of images: one row per image (bytes, path, label)."""

    accounts_unread = False  # a row is an image: nothing can go unlisted

    def __init__(self, uri: str, columns: Columns) -> None:
        self.uri, self.columns = uri, columns

    def _frame(self, spark: Any) -> Any:
        try:
            return spark.read.parquet(self.uri)
        except Exception as exc:
            raise ConfigError(f"cannot read packed input {self.uri}: {errors.cause(exc)}") from None

    def listing(self, spark: Any) -> Listing:
        frame = self._frame(spark)
        missing = [
            name
            for name in (self.columns.path, self.columns.label, self.columns.content)
            if not _has_column(frame, name)
        ]
        if missing:
            raise ConfigError(
                f"packed input {self.uri} has no column {', '.join(missing)}: its "
                f"columns are {', '.join(frame.columns)} (set --path-column, "
                f"--label-column, --content-column)"
            )
        found = frame.count()
        if not found:
            raise ConfigError(f"no images in the packed input {self.uri}")
        return Listing(found=found)

    def _rows(self, frame: Any) -> Any:
        from pyspark.sql import functions as F

        content = F.col(self.columns.content)
        modified = (
            F.col("modificationTime")
            if "modificationTime" in frame.columns
            else F.lit(None).cast("timestamp")
        )
        return frame.select(
            F.col(self.columns.path).cast("string").alias("path"),
            F.col(self.columns.label).cast("string").alias("label"),
            F.length(content).cast("long").alias("length"),
            modified.alias("modificationTime"),
            content.alias("content"),
        )

    def reader(self, spark: Any) -> None:
        """None: the rows carry the images' bytes (`content`)."""
        return None

    def queues(self, reader: None, limit: int | None) -> bool:
        """False: a shard is already ~1,000 images, its rows their bytes."""
        return False

    def stream(self, spark: Any, per_trigger: int, queue: None = None, queue_files: int = 1) -> Any:
        schema = self._frame(spark).schema
        shards = max(1, per_trigger // IMAGES_PER_SHARD)  # --files-per-batch images
        frame = (
            spark.readStream.schema(schema)
            .format("parquet")
            .option("maxFilesPerTrigger", shards)
            .option("maxFileAge", "36500d")
            .load(self.uri)
        )
        return self._rows(frame)

    def samples(
        self, spark: Any, store: storage.Storage, listing: Listing, count: int
    ) -> list[tuple[str, bytes]]:
        """`count` rows picked by a hash of their path: deterministic, spread over classes."""
        from pyspark.sql import functions as F

        rows = (
            self._rows(self._frame(spark))
            .select("path", "content")
            .orderBy(F.xxhash64("path"))
            .limit(count)
            .collect()
        )
        return [(row.path, bytes(row.content)) for row in rows if row.content is not None]


def _has_column(frame: Any, name: str) -> bool:
    try:
        frame.select(name)
    except Exception:
        return False
    return True


def is_packed(store: storage.Storage, uri: str) -> bool:
    """An input is packed when `featurizer pack` marked it, or its top level holds Parquet."""
    try:
        names = store.list_names(uri)
    except Exception:  # the listing says why, with the input's own error
        return False
    return PACK_MARKER in names or any(name.endswith(".parquet") for name in names)


def open_source(config: RunConfig, uri: str, store: storage.Storage, scan: Any) -> Any:
    packed = config.input_format == "parquet" or (
        config.input_format == "auto" and is_packed(store, uri)
    )
    if packed:
        return PackedSource(
            uri, Columns(config.path_column, config.label_column, config.content_column)
        )
    return FileSource(uri, scan)


def pack(
    spark: Any,
    input_uri: str,
    output_uri: str,
    scan: Any,
    images_per_file: int = IMAGES_PER_SHARD,
    max_bytes_per_file: int = 128 << 20,
) -> dict:
    """Write the images under `input_uri` as Parquet shards (path, label, length,
    modificationTime, content; sorted by path) of ~`images_per_file` images or
    ~`max_bytes_per_file`, whichever is smaller, and a _pack.json that says what it holds."""
    from pyspark.sql import functions as F

    store = storage.Storage(spark)
    if store.list_names(output_uri):
        raise ConfigError(f"output {output_uri} is not empty: pack into a new folder")
    source = FileSource(input_uri, scan)
    listing = source.listing(spark)
    files = (
        spark.read.format("binaryFile")
        .option("recursiveFileLookup", "true")
        .option("pathGlobFilter", IMAGE_GLOB)
        .load(input_uri)
    )
    if listing.aliases:
        skip = spark.createDataFrame([(path,) for path in sorted(listing.aliases)], "path string")
        files = files.join(F.broadcast(skip), "path", "left_anti")
    rows = files.select(
        "path", label_of("path").alias("label"), "length", "modificationTime", "content"
    )
    stats = rows.agg(F.count(F.lit(1)).alias("images"), F.sum("length").alias("bytes")).first()
    count, total = int(stats["images"]), int(stats["bytes"] or 0)
    per_file = max(1, min(images_per_file, max_bytes_per_file // max(1, total // max(1, count))))
    shards = max(1, -(-count // per_file))
    (
        rows.repartitionByRange(shards, "path")
        .sortWithinPartitions("path")
        .write.option("maxRecordsPerFile", per_file)
        .parquet(output_uri)
    )
    summary = {
        "images": count,
        "bytes": total,
        "shards": shards,
        "images_per_file": per_file,
        "source": input_uri,
        "skipped_aliases": len(listing.aliases),
        "not_packed": listing.unreadable,
    }
    store.write_bytes(storage.join(output_uri, PACK_MARKER), json.dumps(summary).encode())
    return summary
