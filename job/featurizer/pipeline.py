"""The run: discover -> featurize (checkpointed stream) -> reduce (PCA) -> write -> commit.

Featurization is a Structured Streaming query over the input folder with the
`availableNow` trigger: files are taken in micro-batches of `--files-per-batch`, each
batch's rows are written to `<output>/_work/featurized/batch=N` by `foreachBatch`
(idempotent per batch id), and the checkpoint records which files are done. That gives
bounded memory, progress, exactly-once rows and `--resume` from Spark's own bookkeeping.
PCA then runs over the staged rows, results are staged under `_work/result`, moved into
place, and `_SUCCESS` is written last.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
import uuid
from urllib.parse import unquote
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

from featurizer import engines, reduce, report, storage, udf, weights
from featurizer.config import RunConfig
from featurizer.errors import ConfigError, FeaturizerError
from featurizer.progress import Progress

IMAGE_GLOB = "*.{[jJ][pP][gG],[jJ][pP][eE][gG],[pP][nN][gG]}"
BINARY_SCHEMA = "path string, modificationTime timestamp, length long, content binary"
ARTIFACTS = ("features", "errors", "pca_model", "manifest.json", "explained_variance.png",
             "report.json", "report.html")
SUCCESS = "_SUCCESS"
WORK = "_work"
FEATURE_DIM = weights.FEATURE_DIM
ROWS_PER_OUTPUT_FILE = 20_000            # ~100 MB of 1280-d float features per file
MIN_ROWS_PER_OUTPUT_FILE = 1_000         # ~5 MB: smaller files are not worth a core
SECRET_WORDS = ("secret", "password", "token", "access.key", "credential", "session")


@dataclass(frozen=True)
class Layout:
    """Where a run's files go under the output URI."""

    output: str

    @property
    def work(self) -> str:
        return storage.join(self.output, WORK)

    @property
    def checkpoint(self) -> str:
        return storage.join(self.work, "checkpoint")

    @property
    def featurized(self) -> str:
        return storage.join(self.work, "featurized")

    @property
    def result(self) -> str:
        return storage.join(self.work, "result")

    @property
    def run_file(self) -> str:
        return storage.join(self.work, "run.json")


@dataclass
class Timer:
    stages: dict[str, float] = field(default_factory=dict)
    start: float = field(default_factory=time.monotonic)

    def stage(self, name: str) -> "_Stage":
        return _Stage(self, name)

    def total(self) -> float:
        return time.monotonic() - self.start


class _Stage:
    def __init__(self, timer: Timer, name: str) -> None:
        self.timer, self.name = timer, name

    def __enter__(self) -> None:
        self.begin = time.monotonic()

    def __exit__(self, *exc: object) -> None:
        self.timer.stages[self.name] = round(time.monotonic() - self.begin, 3)


def run(config: RunConfig, spark: Any = None, log: Callable[[str], None] = print) -> dict:
    """Run the whole job; returns the manifest. Raises FeaturizerError on failure.

    Without `spark` the run starts its own session (session.started) and stops it at the end."""
    timer = Timer()
    started_at = _now()
    input_uri, output_uri = storage.normalize(config.input), storage.normalize(config.output)
    _check_locations(input_uri, output_uri)
    weights_file = weights.resolve(config.weights_spec)        # before Spark: fail fast
    with contextlib.ExitStack() as owned:
        if spark is None:                   # our own session: stopped when the run ends
            from featurizer import session

            with timer.stage("spark_start"):
                spark = owned.enter_context(session.started(config, log))
        return _run(config, spark, log, timer, started_at, weights_file)


def _run(config: RunConfig, spark: Any, log: Callable[[str], None], timer: Timer,
         started_at: str, weights_file: weights.WeightsFile) -> dict:
    input_uri, output_uri = storage.normalize(config.input), storage.normalize(config.output)
    store = storage.Storage(spark)
    layout = Layout(output_uri)

    with timer.stage("discover"):
        discovered = discover(spark, input_uri)
    found = len(discovered)
    log(f"found {found:,} images under {input_uri}")
    fingerprint = _fingerprint(config, input_uri, weights_file)
    prepare_output(store, layout, config, fingerprint)

    with timer.stage("export"):
        payload = engines.export(config.engine, weights_file, config.precision,
                                 lambda: calibration_images(store, discovered))
    expected = _expected(found, config)
    with timer.stage("featurize"):
        stream = featurize(spark, store, config, input_uri, layout, payload, expected)
        if config.limit is None and config.sample_fraction is None:
            record_unread(spark, store, layout, discovered)

    with timer.stage("reduce"):
        staged = spark.read.parquet(layout.featurized)
        counts = _counts(staged, found)
        _check_error_rate(store, layout, config, counts, staged)
        vectors = _vectors(staged)
        pca = reduce.fit_pca(vectors, "vector", "pca_vector", FEATURE_DIM, config.pca_k,
                             config.pca_variance, rows=counts["featurized"])
    log(f"PCA: k = {pca.k}, {pca.variance_explained:.1%} of the variance")

    with timer.stage("write"):
        write_results(spark, store, layout, vectors, staged, pca, counts)
    manifest = _manifest(config, spark, input_uri, output_uri, counts, pca, timer,
                         weights_file, stream, started_at, status="succeeded")
    store.write_bytes(storage.join(layout.result, "manifest.json"),
                      report.manifest_json(manifest))
    store.write_bytes(storage.join(layout.result, "explained_variance.png"),
                      report.explained_variance_png(pca.cumulative, pca.k,
                                                    None if config.pca_k else config.pca_variance))
    commit(store, layout)
    if not config.no_report:
        from featurizer import reporting

        reporting.after_run(spark, output_uri, log)
    return manifest


# ---- stages ---------------------------------------------------------------------------

def discover(spark: Any, input_uri: str) -> list[str]:
    """The images under the input, as Spark's `path` column spells them (fails early on a
    bad input)."""
    try:
        files = (spark.read.format("binaryFile").option("recursiveFileLookup", "true")
                 .option("pathGlobFilter", IMAGE_GLOB).load(input_uri).inputFiles())
    except Exception as exc:
        raise ConfigError(f"cannot read input {input_uri}: {storage.java_message(exc)}") from None
    if not files:
        raise ConfigError(f"no images (.jpg, .jpeg, .png) found under {input_uri}")
    return [spark_path(uri) for uri in files]


def spark_path(uri: str) -> str:
    """inputFiles() gives URI-encoded strings; binaryFile's `path` column is decoded, and
    local files read `file:/x` rather than `file:///x`."""
    path = unquote(uri)
    return "file:/" + path[len("file:///"):] if path.startswith("file:///") else path


def prepare_output(store: storage.Storage, layout: Layout, config: RunConfig,
                   fingerprint: dict) -> None:
    """Refuse to clobber, clear a stale work area, or keep it for --resume."""
    try:
        names = store.list_names(layout.output)
    except Exception as exc:
        raise ConfigError(f"cannot access output {layout.output}: "
                          f"{storage.java_message(exc)}") from None
    interrupted = WORK in names
    if config.resume and interrupted:
        previous = json.loads(store.read_bytes(layout.run_file)) if store.exists(
            layout.run_file) else None
        if previous != fingerprint:
            raise ConfigError(f"{layout.output} holds a run with other inputs or settings; "
                              f"--resume needs the same --input, --weights, --engine, "
                              f"--limit and --sample-fraction (or use --overwrite)")
        return
    if config.resume and SUCCESS in names:
        raise ConfigError(f"{layout.output} is already complete; use --overwrite to redo it")
    if names and not (config.overwrite or config.resume):
        hint = ("it holds an interrupted run: pass --resume to continue it or --overwrite "
                "to start over" if names == [WORK] else "pass --overwrite to replace it")
        raise ConfigError(f"output {layout.output} is not empty; {hint}")
    try:
        if interrupted:
            store.delete(layout.work)
        store.mkdirs(layout.output)
        store.write_bytes(layout.run_file, json.dumps(fingerprint).encode())
    except Exception as exc:
        raise ConfigError(f"output {layout.output} is not writable: "
                          f"{storage.java_message(exc)}") from None


@dataclass(frozen=True)
class StreamStats:
    resumed: int                 # rows staged by an earlier, interrupted run (--resume)
    processed: int               # files this run decoded and featurized (or failed)
    worker_rss_mb: float         # peak RSS of any Python worker


def featurize(spark: Any, store: storage.Storage, config: RunConfig, input_uri: str,
              layout: Layout, payload: engines.Payload, expected: int) -> StreamStats:
    """Stream the input through the UDF into staged Parquet."""
    sc = spark.sparkContext
    if storage.scheme_of(input_uri) == "file":
        # Local listings are fast: list on the driver instead of launching a listing job.
        spark.conf.set("spark.sql.sources.parallelPartitionDiscovery.threshold", "1000000")
    images_done = sc.accumulator(0)
    worker_rss = sc.accumulator(0.0, udf.MaxParam())
    featurize_udf = udf.make_featurize_udf(sc.broadcast(payload.data), payload.key,
                                           payload.engine, config.inference_batch,
                                           images_done, worker_rss)
    per_trigger = min(config.files_per_batch, config.limit or config.files_per_batch)
    stream = (spark.readStream.format("binaryFile").schema(BINARY_SCHEMA)
              .option("recursiveFileLookup", "true").option("pathGlobFilter", IMAGE_GLOB)
              .option("maxFilesPerTrigger", per_trigger)
              .option("maxFileAge", "36500d")           # never skip old files
              .load(input_uri))
    resumed = _staged_rows(spark, layout)
    writer = BatchWriter(config, layout, store, featurize_udf, resumed)
    query = (stream.writeStream.foreachBatch(writer)
             .option("checkpointLocation", layout.checkpoint)
             .trigger(availableNow=True).queryName(f"featurize-{uuid.uuid4().hex[:8]}").start())
    try:
        with Progress("featurize", max(expected - resumed, 1), lambda: images_done.value):
            while not query.awaitTermination(0.5):
                if writer.limit_reached:
                    query.stop()
    except KeyboardInterrupt:
        query.stop()
        raise FeaturizerError(f"interrupted; rerun with --resume to continue into "
                              f"{layout.output}") from None
    except Exception as exc:
        raise FeaturizerError(f"featurization failed: {storage.java_message(exc)}") from None
    return StreamStats(resumed=resumed, processed=int(images_done.value),
                       worker_rss_mb=float(worker_rss.value))


class BatchWriter:
    """foreachBatch sink: featurize one micro-batch of files into batch=N (idempotent)."""

    def __init__(self, config: RunConfig, layout: Layout, store: storage.Storage,
                 featurize_udf: Any, already_selected: int) -> None:
        self.config, self.layout, self.store = config, layout, store
        self.featurize_udf = featurize_udf
        self.selected = already_selected
        self.limit_reached = config.limit is not None and already_selected >= config.limit

    def __call__(self, files: Any, batch_id: int) -> None:
        from pyspark.sql import functions as F

        target = storage.join(self.layout.featurized, f"batch={batch_id:06d}")
        if self.limit_reached or self.store.exists(storage.join(target, "_SUCCESS")):
            # A run killed between staging a batch and checkpointing its commit replays
            # that batch (same files, same id): its rows are staged and counted already.
            return
        if self.config.sample_fraction is not None:
            files = files.where(_sampled(self.config.sample_fraction))
        taken = None
        if self.config.limit is not None:
            files, taken = self._limited(files)
        rows = files.select(
            "path", F.element_at(F.split("path", "/"), -2).alias("label"),
            "length", "modificationTime", self.featurize_udf("content").alias("result"),
        ).select("path", "label", "length", "modificationTime", "result.features",
                 "result.error")
        rows.write.mode("overwrite").parquet(target)
        if taken is not None:           # only now: the driver stops the query on this flag
            self.selected += taken
            self.limit_reached = self.selected >= self.config.limit

    def _limited(self, files: Any) -> tuple[Any, int]:
        """At most the files still needed under --limit (first by path within the batch)."""
        remaining = self.config.limit - self.selected
        count = files.count()                       # metadata only: no content read
        if count <= remaining:
            return files, count
        partitions = max(1, math.ceil(remaining / 128))
        return files.orderBy("path").limit(remaining).repartition(partitions), remaining


def calibration_images(store: storage.Storage, discovered: list[str],
                       count: int = 128) -> tuple[str, list[Any]]:
    """Up to `count` of the input's images, evenly spaced in path order (so every class
    folder tends to contribute), preprocessed for the engine; with a digest of their bytes."""
    import hashlib

    from featurizer import images

    ordered = sorted(discovered)
    step = max(1, len(ordered) // count)
    digest, samples = hashlib.sha256(), []
    for path in ordered[::step][:count]:
        data = store.read_bytes(path)
        try:
            samples.append(images.preprocess(images.decode(data)))
        except images.ImageError:
            continue
        digest.update(data)
    return digest.hexdigest(), samples


def record_unread(spark: Any, store: storage.Storage, layout: Layout,
                  discovered: list[str]) -> None:
    """Spark's file scan skips zero-byte files silently; record every discovered file
    that produced no row as an error, so found = featurized + failed."""
    from pyspark.sql import functions as F

    staged = {row.path for row in spark.read.parquet(layout.featurized).select("path")
              .toLocalIterator()}
    unread = sorted(set(discovered) - staged)
    if not unread:
        return
    rows = [(path, _unread_reason(store, path)) for path in unread]
    frame = spark.createDataFrame(rows, "path string, error string").select(
        "path", F.element_at(F.split("path", "/"), -2).alias("label"),
        F.lit(None).cast("long").alias("length"),
        F.lit(None).cast("timestamp").alias("modificationTime"),
        F.lit(None).cast("array<float>").alias("features"), "error")
    frame.coalesce(1).write.mode("overwrite").parquet(
        storage.join(layout.featurized, "batch=unread"))


def _unread_reason(store: storage.Storage, path: str) -> str:
    try:
        return "empty file (0 bytes)" if store.size(path) == 0 else "file was not read"
    except Exception:
        return "file disappeared during the run"


def _sampled(fraction: float) -> Any:
    """A deterministic pseudo-random subset keyed by path."""
    from pyspark.sql import functions as F

    bucket = F.pmod(F.xxhash64("path"), F.lit(1_000_000))
    return bucket < F.lit(int(round(fraction * 1_000_000)))


def _staged_rows(spark: Any, layout: Layout) -> int:
    try:
        return spark.read.parquet(layout.featurized).count()
    except Exception:                               # nothing staged yet
        return 0


def _vectors(staged: Any) -> Any:
    from pyspark.ml.functions import array_to_vector

    return (staged.where("error IS NULL")
            .select("path", "label", "features", array_to_vector("features").alias("vector")))


def _counts(staged: Any, found: int) -> dict[str, int]:
    from pyspark.sql import functions as F

    row = staged.agg(
        F.count(F.lit(1)).alias("selected"),
        F.sum(F.when(F.col("error").isNull(), 1).otherwise(0)).alias("featurized"),
        F.countDistinct(F.when(F.col("error").isNull(), F.col("label"))).alias("classes"),
        F.countDistinct("path").alias("distinct_paths"),
    ).first()
    selected = int(row["selected"] or 0)
    return {"found": found, "selected": selected, "featurized": int(row["featurized"] or 0),
            "failed": selected - int(row["featurized"] or 0), "classes": int(row["classes"]),
            "duplicate_paths": selected - int(row["distinct_paths"])}


def _check_error_rate(store: storage.Storage, layout: Layout, config: RunConfig,
                      counts: dict[str, int], staged: Any) -> None:
    rate = counts["failed"] / max(counts["selected"], 1)
    if counts["selected"] == 0:
        raise FeaturizerError("no images were selected (check --limit / --sample-fraction)")
    if rate <= config.max_error_rate and counts["featurized"] >= 2:
        return
    _write_errors(staged, storage.join(layout.result, "errors"))
    _clear(store, layout.output)
    store.rename(storage.join(layout.result, "errors"), storage.join(layout.output, "errors"))
    store.write_bytes(storage.join(layout.output, "manifest.json"), report.manifest_json(
        {"status": "failed", "output": layout.output, "counts": counts,
         "error_rate": rate, "max_error_rate": config.max_error_rate}))
    store.delete(layout.work)
    errors_uri = storage.join(layout.output, "errors")
    if counts["featurized"] < 2:
        raise FeaturizerError(f"only {counts['featurized']} image(s) could be featurized "
                              f"(PCA needs 2); see {errors_uri}")
    raise FeaturizerError(f"{counts['failed']:,} of {counts['selected']:,} files could not be "
                          f"decoded ({rate:.1%} > --max-error-rate {config.max_error_rate:.1%});"
                          f" see {errors_uri}")


def _write_errors(staged: Any, uri: str) -> None:
    staged.where("error IS NOT NULL").select("path", "error").coalesce(1) \
        .write.mode("overwrite").parquet(uri)


def write_results(spark: Any, store: storage.Storage, layout: Layout, vectors: Any,
                  staged: Any, pca: reduce.PcaResult, counts: dict[str, int]) -> None:
    from pyspark.ml.functions import vector_to_array

    files = output_files(counts["featurized"], spark.sparkContext.defaultParallelism)
    (pca.model.transform(vectors)
     .select("path", "label", "features",
             vector_to_array("pca_vector", "float32").alias("pca"))
     .coalesce(files).write.mode("overwrite")
     .parquet(storage.join(layout.result, "features")))
    _write_errors(staged, storage.join(layout.result, "errors"))
    pca.model.write().overwrite().save(storage.join(layout.result, "pca_model"))


def output_files(rows: int, cores: int) -> int:
    """Few large files, yet one per core (while files keep >= MIN_ROWS_PER_OUTPUT_FILE rows):
    a single file is written by a single task, which left the other cores idle for the
    whole write (4k images: 3.1 s on one of two cores)."""
    spread = min(cores, math.ceil(rows / MIN_ROWS_PER_OUTPUT_FILE))
    return max(1, math.ceil(rows / ROWS_PER_OUTPUT_FILE), spread)


def commit(store: storage.Storage, layout: Layout) -> None:
    """Move staged results into place; `_SUCCESS` last, so partial output never looks done."""
    _clear(store, layout.output)
    for name in ARTIFACTS:
        source = storage.join(layout.result, name)
        if store.exists(source):
            store.rename(source, storage.join(layout.output, name))
    store.write_bytes(storage.join(layout.output, SUCCESS), b"")
    store.delete(layout.work)


def _clear(store: storage.Storage, output: str) -> None:
    """Remove a previous run's marker first, then its artifacts."""
    for name in (SUCCESS, *ARTIFACTS):
        target = storage.join(output, name)
        if store.exists(target):
            store.delete(target)


# ---- helpers ----------------------------------------------------------------------------

def _check_locations(input_uri: str, output_uri: str) -> None:
    if storage.is_inside(output_uri, input_uri):
        raise ConfigError(f"output {output_uri} is inside the input {input_uri}: the run would "
                          f"read its own files; choose an output outside the input")
    if storage.is_inside(input_uri, output_uri):
        raise ConfigError(f"input {input_uri} is inside the output {output_uri}")


def _expected(found: int, config: RunConfig) -> int:
    expected = found
    if config.sample_fraction is not None:
        expected = int(round(found * config.sample_fraction))
    if config.limit is not None:
        expected = min(expected, config.limit)
    return max(expected, 1)


def _fingerprint(config: RunConfig, input_uri: str, weights_file: weights.WeightsFile) -> dict:
    return {"input": input_uri, "weights_sha256": weights_file.sha256, "engine": config.engine,
            "precision": config.precision,
            "limit": config.limit, "sample_fraction": config.sample_fraction}


def _redacted(config: RunConfig) -> dict:
    values = config.to_dict()
    values["conf"] = [item.split("=", 1)[0] + "=***"
                      if any(word in item.split("=", 1)[0].lower() for word in SECRET_WORDS)
                      else item for item in config.conf]
    return values


def _manifest(config: RunConfig, spark: Any, input_uri: str, output_uri: str,
              counts: dict[str, int], pca: reduce.PcaResult, timer: Timer,
              weights_file: weights.WeightsFile, stream: StreamStats, started_at: str,
              status: str) -> dict:
    total = timer.total()
    featurize_s = timer.stages.get("featurize", total)
    sc = spark.sparkContext
    return {
        "status": status,
        "input": input_uri,
        "output": output_uri,
        "parameters": _redacted(config),
        "counts": {**{key: counts[key] for key in ("found", "selected", "featurized", "failed")},
                   "resumed": stream.resumed, "processed_this_run": stream.processed},
        "classes": counts["classes"],
        "pca": {"k": pca.k, "variance_target": None if config.pca_k else config.pca_variance,
                "variance_explained": pca.variance_explained,
                "explained_variance": pca.explained},
        "timings_s": {**timer.stages, "total": round(total, 3)},
        "throughput": {
            "featurize_images_per_s": round(stream.processed / max(featurize_s, 1e-9), 2),
            "end_to_end_images_per_s": round(counts["selected"] / max(total, 1e-9), 2)},
        "memory_mb": {"driver_python_peak": udf.peak_rss_mb(),
                      "driver_jvm_peak": _jvm_peak_rss_mb(spark),
                      "python_worker_peak": round(stream.worker_rss_mb, 1)},
        "engine": {"name": config.engine, "precision": config.precision,
                   "batch_size": config.inference_batch},
        "weights": {"name": weights_file.name, "sha256": weights_file.sha256},
        "spark": {"master": sc.master, "default_parallelism": sc.defaultParallelism,
                  "task_cpus": int(sc.getConf().get("spark.task.cpus", "1"))},
        "versions": report.versions(spark.version),
        "started_at": started_at,
        "finished_at": _now(),
    }


def _jvm_peak_rss_mb(spark: Any) -> float | None:
    """Peak RSS of the driver JVM (it runs beside this process, in every deploy mode)."""
    try:
        return udf.peak_rss_mb(spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid())
    except Exception:                            # no gateway JVM (e.g. Spark Connect)
        return None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
