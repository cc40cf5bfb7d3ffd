"""The run: discover -> featurize (checkpointed stream) -> reduce (PCA) -> write -> commit.

Featurization is a Structured Streaming query with the `availableNow` trigger over the
listing's queue of paths (FileSource.enqueue; over the input folder itself where the JVM must
read the files, or under --limit): files are taken in micro-batches of `--files-per-batch` (by
default 4,096 per core of the session: RunConfig.batch_files), each
batch's rows are written to `<output>/_work/featurized/batch=N` by `foreachBatch`
(idempotent per batch id), and the checkpoint records which files are done. That gives
bounded memory, progress, exactly-once rows and `--resume` from Spark's own bookkeeping.
PCA then runs over the staged rows, results are staged under `_work/result`, and
`output.commit` moves them into place with `_SUCCESS` last. The output's layout, its lease
and both commit paths belong to `output.py`.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import importlib
import io
import math
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from featurizer import (
    arrow_files,
    engines,
    errors,
    images,
    local_input,
    output,
    reading,
    reduce,
    report,
    reporting,
    signals,
    sources,
    storage,
    udf,
    vectors,
    weights,
)
from featurizer.config import RunConfig
from featurizer.errors import ConfigError, FeaturizerError, Stopped
from featurizer.output import Layout
from featurizer.progress import Progress

FEATURE_DIM = weights.FEATURE_DIM
ROWS_PER_OUTPUT_FILE = 20_000  # ~100 MB of 1280-d float features per file
MIN_ROWS_PER_OUTPUT_FILE = 1_000  # ~5 MB: smaller files are not worth a core
SECRET_WORDS = ("secret", "password", "token", "access.key", "credential", "session")
CALIBRATION_IMAGES = 128
# Rows per Arrow batch over staged vectors (_vector_batches): the projection of 14,410 rows
# and its write took 3.3-3.8 s at 64 rows a batch, 2.8 s at 1,024, 3.6 s at 8,192.
VECTOR_BATCH = 1024
STAGED_ROW_GROUP_ROWS = 2048  # 10 MB of staged vectors a worker holds before writing them
# The JVM reads the staged vectors back (PCA's one pass, the projection) in pages of
# STAGED_PAGE_ROWS rows (~320 KB) and buffers of 256 KB, not a heap array per column chunk
# (Parquet's vectored read: ~7 MB a staged part) and per ~1 MB page: objects of half a G1
# region (1 MB at -Xmx3g) or more are humongous, and their garbage made G1 grow the heap
# at the end of a run (BENCHMARKS.md, fourteenth round).
STAGED_PAGE_ROWS = 64
STAGED_VECTOR_COLUMNS = ("path", "label", "features")  # what features/ keeps of a staged row
STAGED_READ_OPTIONS = {
    "parquet.hadoop.vectored.io.enabled": "false",
    "parquet.read.allocation.size": str(256 * 1024),
}
GATHER_ROWS_PER_TASK = 1024  # below this, PCA sums the staged rows instead (_big_tasks)
# Featurizing tasks per core per micro-batch, of equal file counts (session.job_defaults):
# two per core keep the progress line's step (a task's end) at twice fewer micro-batches, each
# a pause of both cores (BENCHMARKS.md, eighth round).
TASKS_PER_CORE = 2
MIN_PARTITIONS = "spark.sql.files.minPartitionNum"
# Float vectors are written PLAIN: Parquet's default dictionary encoding hashed every one of
# the 1,280 floats of each row into a map that never fits, then fell back to PLAIN anyway (the
# same file size); it was the hottest Java code of a run (~28% of executor samples; off: the
# executor threads' CPU of a 5,240-image run 19.4 -> 14.1 s, BENCHMARKS.md).
# Staged vectors are bytes, as unlikely to repeat: no dictionary for them either.
PLAIN_VECTORS = {
    "parquet.enable.dictionary#features": "false",
    **{
        f"parquet.enable.dictionary#{column}.list.element": "false"
        for column in ("features", "pca")
    },
}


@dataclass
class Timer:
    stages: dict[str, float] = field(default_factory=dict)
    start: float = field(default_factory=time.monotonic)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        signals.check()  # a stop request ends the run between steps
        begin = time.monotonic()
        try:
            yield
        finally:
            self.stages[name] = round(time.monotonic() - begin, 3)

    def total(self) -> float:
        return time.monotonic() - self.start


@dataclass
class Run:
    """One run's context, made once and handed to every stage."""

    config: RunConfig
    input_uri: str
    layout: Layout
    weights: weights.WeightsFile
    log: Callable[[str], None]
    timer: Timer = field(default_factory=Timer)
    run_id: str = field(default_factory=output.new_run_id)
    started_at: str = field(default_factory=lambda: _now())
    warnings: list[str] = field(default_factory=list)
    local_scan: local_input.LocalScan = field(default_factory=local_input.LocalScan)
    reused_pca: reduce.PcaResult | None = None  # --pca-model, loaded before featurizing

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        self.log(f"warning: {message}")


def run(
    config: RunConfig,
    spark: Any = None,
    log: Callable[[str], None] = print,
    verbose: bool = False,
    log_file: Path | None = None,
) -> dict:
    """Run the whole job; returns the manifest. Raises FeaturizerError on failure (or
    Stopped on SIGINT/SIGTERM, with `_work/` kept for --resume).

    Without `spark` the run starts its own session (session.started) and stops it at the
    end; a local one logs Spark to `log_file` (and the console only if `verbose`)."""
    timer, started_at, run_id = Timer(), _now(), output.new_run_id()
    input_uri = storage.normalize(config.input)
    early_output = (  # else known once Spark runs
        None
        if output.needs_app_name(config.output)
        else storage.normalize(output.expand(config.output))
    )
    if early_output:
        _check_locations(input_uri, early_output)
    weights_file = weights.resolve(config.weights_spec)  # before Spark: fail fast
    local = storage.local_path(input_uri)
    with contextlib.ExitStack() as owned:
        walking = None
        if local:  # walked while the JVM starts; its paths written to a folder of the run's
            listed = owned.enter_context(tempfile.TemporaryDirectory(prefix="featurizer-"))
            walker = owned.enter_context(concurrent.futures.ThreadPoolExecutor(1, "walk"))
            walking = walker.submit(local_input.scan, local, listed, config.queue_file_paths)

        def prepared() -> tuple[Any, Run]:
            """The session (ours, stopped at the end, or the caller's) and the run: nothing
            in here writes to the output."""
            session = spark
            if session is None:
                from featurizer import session as sessions

                with timer.stage("spark_start"):
                    session = owned.enter_context(sessions.started(config, log, verbose, log_file))
            scan = walking.result() if walking else local_input.LocalScan()  # e.g. a link loop
            output_uri = early_output or storage.normalize(
                output.expand(config.output, session.sparkContext.appName)
            )
            if not early_output:
                _check_locations(input_uri, output_uri)
            run = Run(
                config,
                input_uri,
                Layout(output_uri),
                weights_file,
                log,
                timer=timer,
                run_id=run_id,
                started_at=started_at,
                local_scan=scan,
            )
            if config.pca_model:  # a configuration mistake: before work
                run.reused_pca = reduce.load_pca(
                    session,
                    storage.normalize(config.pca_model),
                    FEATURE_DIM,
                    "vector",
                    "pca_vector",
                )
            return session, run

        lease = None
        if early_output and storage.local_path(early_output):
            # A local output's lease is taken in Python and settles while Spark starts
            # (1 s otherwise spent waiting once Spark is up); a refused run leaves nothing.
            lease = output.Lease(storage.LocalStorage(), Layout(early_output), run_id)
            owned.callback(lease.release)
            spark, run = lease.acquire(config.resume, meanwhile=prepared)
        else:
            spark, run = prepared()
        return _run(run, spark, lease)


def _run(run: Run, spark: Any, lease: output.Lease | None = None) -> dict:
    """The run, under `lease` (held already) or under a lease taken here, on Spark's
    storage, while the input is listed."""
    config, layout, timer = run.config, run.layout, run.timer
    store = storage.Storage(spark)
    source = sources.open_source(config, run.input_uri, store, run.local_scan)

    def listed() -> sources.Listing:  # and the workers started
        return _and_warm(spark, config.engine, discover(source, spark))

    with timer.stage("discover"):
        if lease is None:
            lease = output.Lease(store, layout, run.run_id)
            listing = lease.acquire(config.resume, meanwhile=listed)
        else:
            listing = lease.holding(listed)
    packed = " (packed)" if isinstance(source, sources.PackedSource) else ""
    run.log(
        f"found {listing.found:,} images under {run.input_uri}{packed}"
        + (
            f" ({len(listing.aliases):,} more reached again through links: counted once)"
            if listing.aliases
            else ""
        )
    )
    try:
        return _featurize_and_commit(run, spark, store, source, listing)
    except Stopped as stopped:
        with contextlib.suppress(Exception):
            if store.exists(layout.work):
                stopped.detail = f"rerun with --resume to continue into {layout.output}"
        raise
    finally:
        lease.release()


def _featurize_and_commit(
    run: Run, spark: Any, store: storage.Storage, source: Any, listing: sources.Listing
) -> dict:
    config, layout, timer = run.config, run.layout, run.timer
    reader = source.reader(spark)
    queue = layout.queue if source.queues(reader, config.limit) else None
    work = output.prepare(
        store,
        layout,
        config.overwrite,
        config.resume,
        config.incremental,
        _fingerprint(config, run.input_uri, run.weights, "input" if queue is None else "queue"),
    )
    base = (work or {}).get("base") or {}  # an incremental run: the output it adds to
    held = base.get("counts", {}).get("found", 0)
    new = max(listing.found - held, 0) if work else listing.found

    with timer.stage("export"):
        payload = engines.export(
            config.engine,
            run.weights,
            config.precision,
            lambda: calibration_images(source.samples(spark, store, listing, CALIBRATION_IMAGES)),
        )
    with timer.stage("featurize"):
        readable = new - len(listing.unreadable)  # what the stream will see
        known = _paths_in(spark, store, layout) if work else None  # the output's own
        if queue is not None:
            source.enqueue(spark, listing, queue, config.queue_file_paths, known)
        with _read_tasks(spark), _one_job_a_micro_batch(spark):
            stream = featurize(
                spark,
                store,
                run,
                source,
                payload,
                _expected(readable, config),
                sorted(listing.aliases) if queue is None else [],  # a queue has none
                reader,
                queue,
                gather=not work and run.reused_pca is None and _big_tasks(spark, config),
            )
        accounting = (
            source.accounts_unread and config.limit is None and config.sample_fraction is None
        )
        # A fresh run over a queue stages rows of listed paths only: when as many distinct
        # paths are staged as were listed (the counts after featurizing), none is missing
        # and the join looking for them is skipped.
        proven_by_counts = (
            accounting
            and queue is not None
            and not work
            and not config.resume
            and not listing.unreadable
        )
        if accounting and not proven_by_counts:
            record_unread(spark, store, layout, listing.paths, listing.unreadable, known)
    nothing_new = bool(work) and not _has_staged(store, layout)
    if nothing_new and not config.refit_pca:
        store.delete(layout.work)
        run.log(f"nothing new under {run.input_uri}: {layout.output} is unchanged")
        return base

    with timer.stage("reduce"), _vector_batches(spark):
        if nothing_new:
            staged = spark.createDataFrame([], udf.STAGED_SCHEMA)
            counts = _counts(staged, 0)
        else:
            staged = _read_staged(spark, layout)
            counts = _staged_counts(spark, layout.featurized, staged, 0 if work else listing.found)
        if proven_by_counts and counts["selected"] - counts["duplicate_paths"] != listing.found:
            record_unread(spark, store, layout, listing.paths, listing.unreadable, known)
            staged = _read_staged(spark, layout)
            counts = _staged_counts(spark, layout.featurized, staged, listing.found)
        if not work and counts["found"] > listing.found:
            run.warn(
                f"{counts['found'] - listing.found:,} images were added to the input during "
                f"the run and featurized too"
            )
        failure = _failure(counts, config, layout.final("errors"), adding=bool(work))
        if failure and work:  # the output stays as it was; the new errors are staged
            _write_errors(staged, layout.staged("errors"))
            raise FeaturizerError(failure.replace(layout.final("errors"), layout.staged("errors")))
        if failure:
            if counts["selected"]:
                _commit_failed_run(store, run, counts, staged)
            raise FeaturizerError(failure)
        featurized = _vectors(staged)
        if work and not config.refit_pca:
            run.reused_pca = reduce.load_pca(
                spark, layout.final("pca_model"), FEATURE_DIM, "vector", "pca_vector"
            )
            if config.pca_k is not None and config.pca_k != run.reused_pca.k:
                run.warn(
                    f"--pca-k {config.pca_k} is not the output's k = {run.reused_pca.k}: the "
                    f"new rows are projected with the output's model (--refit-pca to change k)"
                )
        if work:
            counts = _added_to(base["counts"], counts)
            counts["classes"] = _classes(spark, layout, staged)
        if work and config.refit_pca:  # every row, old and new, gets the new model's pca
            featurized = featurized.unionByName(_vectors(_output_rows(spark, layout)))
            staged = staged.unionByName(_output_rows(spark, layout, errors=True))
        pca = run.reused_pca or reduce.fit_pca(
            featurized,
            "vector",
            "pca_vector",
            FEATURE_DIM,
            config.pca_k,
            config.pca_variance,
            rows=counts["featurized"],
            gathered=_gathered(stream, counts),
        )
        if pca.clamped_from is not None:
            run.warn(
                f"--pca-k {pca.clamped_from} asks for more components than "
                f"{counts['featurized']:,} images can have (at most images - 1 carry "
                f"variance): using k = {pca.k}"
            )
    run.log(
        f"PCA: k = {pca.k}, {pca.variance_explained:.1%} of the variance"
        + (f" (the model of {pca.source})" if pca.source else "")
    )

    # Drawn (matplotlib: ~0.4 s, its import most of it) while Spark writes the results, and
    # the report's imports done there too: the driver's Python only waits for the JVM then.
    drawing = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="chart")
    chart = drawing.submit(
        report.explained_variance_png,
        pca.cumulative,
        pca.k,
        None if config.pca_k or pca.source else config.pca_variance,
    )
    if not config.no_report:
        drawing.submit(reporting.import_modules)
    drawing.shutdown(wait=False)
    with (
        timer.stage("write"),
        _vector_batches(spark),
        _failing("writing results to", layout.result),
    ):
        rows = counts["added"] if work and not config.refit_pca else counts["featurized"]
        failed = counts["added_failed"] if work and not config.refit_pca else counts["failed"]
        mixed = work and config.refit_pca  # the output's rows too, not only the staged ones
        write_results(spark, layout, featurized if mixed else None, staged, pca, rows, failed)
    manifest = _manifest(run, spark, counts, pca, stream, status="succeeded")
    if work:
        manifest["counts"].update(added=counts["added"], added_failed=counts["added_failed"])
    manifest["runs"] = [*base.get("runs", [_run_entry(base)] if base else []), _run_entry(manifest)]
    with _failing("writing results to", layout.result):
        store.write_bytes(layout.staged(output.MANIFEST), report.manifest_json(manifest))
        store.write_bytes(layout.staged(output.EXPLAINED_VARIANCE_PNG), chart.result())
    with _failing("committing", layout.output):
        if work and not config.refit_pca:
            output.commit_added(store, layout, work["work_id"])
        else:  # a full run keeps the stream's record for --incremental
            output.commit(store, layout, keep_state=_complete_record(config))
    if not config.no_report:
        reporting.after_run(spark, layout.output, run.log)
    return manifest


@contextlib.contextmanager
def _vector_batches(spark: Any) -> Iterator[None]:
    """Arrow batches of VECTOR_BATCH rows for the Python steps over staged vectors (PCA's
    sums, the projection) instead of the featurizing UDF's small ones (session.job_defaults):
    5 MB of vectors a batch, and per-batch overhead paid 16x less often."""
    with _setting(spark, "spark.sql.execution.arrow.maxRecordsPerBatch", str(VECTOR_BATCH)):
        yield


@contextlib.contextmanager
def _setting(spark: Any, key: str, value: str) -> Iterator[None]:
    """The session's `key` set to `value` for a block, then as it was."""
    previous = spark.conf.get(key, None)
    spark.conf.set(key, value)
    try:
        yield
    finally:
        if previous is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, previous)


def _complete_record(config: RunConfig) -> bool:
    """Only a run over every file leaves a checkpoint that says which files the output
    holds (--limit and --sample-fraction mark files seen that were not featurized)."""
    return config.limit is None and config.sample_fraction is None


def _paths_in(spark: Any, store: storage.Storage, layout: Layout) -> Any:
    """The paths a complete output holds (features/ and errors/), as a DataFrame."""
    frames = [
        spark.read.parquet(layout.final(name)).select("path")
        for name in ("features", "errors")
        if store.exists(layout.final(name))
    ]
    return frames[0].unionByName(frames[1]) if len(frames) == 2 else frames[0]


def _output_rows(spark: Any, layout: Layout, errors: bool = False) -> Any:
    """The output's rows in the staged shape (path, label, features as bytes, error)."""
    from pyspark.sql import functions as F

    if errors:
        return _error_rows(spark.read.parquet(layout.final("errors")))
    rows = spark.read.parquet(layout.final("features")).select(
        "path", "label", "features", F.lit(None).cast("string").alias("error")
    )
    return vectors.packed(rows, "features", FEATURE_DIM)


def _classes(spark: Any, layout: Layout, staged: Any) -> int:
    """Distinct labels of the output's rows and the new ones."""
    old = spark.read.parquet(layout.final("features")).select("label")
    new = staged.where("error IS NULL").select("label")
    return int(old.unionByName(new).distinct().count())


def _added_to(base: dict[str, int], new: dict[str, int]) -> dict[str, int]:
    """The output's counts after an incremental run: the base plus what this run added."""
    total = {
        key: base.get(key, 0) + new[key] for key in ("found", "selected", "featurized", "failed")
    }
    return {**new, **total, "added": new["featurized"], "added_failed": new["failed"]}


def _run_entry(manifest: dict) -> dict:
    """One line of the output's history (manifest `runs`)."""
    counts = manifest.get("counts", {})
    return {
        "run_id": manifest.get("run_id"),
        "started_at": manifest.get("started_at"),
        "finished_at": manifest.get("finished_at"),
        "featurized": counts.get("added", counts.get("featurized")),
        "failed": counts.get("added_failed", counts.get("failed")),
        "weights_sha256": manifest.get("weights", {}).get("sha256"),
        "engine": manifest.get("engine", {}).get("name"),
        "precision": manifest.get("engine", {}).get("precision"),
        "pca": manifest.get("pca", {}).get("model_source") or "fitted",
    }


# ---- stages ---------------------------------------------------------------------------


def _and_warm(spark: Any, engine: str, listing: sources.Listing) -> sources.Listing:
    """Start a Python worker per core (udf.make_warm) in the background, then return `listing`.
    While the output's lease settles the cores are idle; the first micro-batch would start
    the workers, and the JVM's Python-task path, cold. The driver then imports Spark ML
    (reduce._pca_model's 0.2 s, at the end of the run otherwise) while the workers featurize."""
    cores = spark.sparkContext.defaultParallelism

    def warm() -> None:
        with contextlib.suppress(Exception):  # the first micro-batch starts them then
            frame = spark.range(0, cores, 1, cores).mapInArrow(udf.make_warm(engine), "id long")
            frame.collect()
        importlib.import_module("pyspark.ml.feature")

    threading.Thread(target=warm, daemon=True, name="warm").start()
    return listing


def discover(source: Any, spark: Any) -> sources.Listing:
    """What the input holds (fails early, in one line, on a bad input)."""
    return source.listing(spark)


@dataclass(frozen=True)
class StreamStats:
    resumed: int  # rows staged by an earlier, interrupted run (--resume)
    processed: int  # files this run decoded and featurized (or failed)
    worker_rss_mb: float  # peak RSS of any Python worker
    moments: reduce.Moments | None = None  # sums of the rows this run featurized (gather)


@contextlib.contextmanager
def _read_tasks(spark: Any) -> Iterator[None]:
    """While featurizing, a micro-batch is split into TASKS_PER_CORE tasks per core of equal
    file counts (session.job_defaults), unless the user set spark.sql.files.minPartitionNum."""
    if spark.conf.get(MIN_PARTITIONS, None) is not None:
        yield
        return
    tasks = TASKS_PER_CORE * spark.sparkContext.defaultParallelism
    with _setting(spark, MIN_PARTITIONS, str(tasks)):
        yield


@contextlib.contextmanager
def _one_job_a_micro_batch(spark: Any) -> Iterator[None]:
    """Adaptive query execution off while featurizing: it ran each micro-batch as three Spark
    jobs (the queue's scan and shuffle, the featurizing tasks, the rows' sum), each planned
    after the one before, where the plan has nothing to adapt (a fixed number of tasks, a
    one-row sum). One job a micro-batch: the cores wait ~0.15 s less between two."""
    with _setting(spark, "spark.sql.adaptive.enabled", "false"):
        yield


def _big_tasks(spark: Any, config: RunConfig) -> bool:
    """Whether a micro-batch's tasks featurize enough rows each that sending their PCA sums
    (6.5 MB per task) costs less than reading their rows back (5 KB each): TASKS_PER_CORE
    tasks per core per micro-batch (_read_tasks)."""
    cores = spark.sparkContext.defaultParallelism
    return config.batch_files(cores) >= GATHER_ROWS_PER_TASK * TASKS_PER_CORE * cores


def _gathered(stream: StreamStats, counts: dict[str, int]) -> reduce.Moments | None:
    """The featurizing tasks' own sums when they cover exactly the staged rows; else None,
    and PCA reads the staged rows once more to sum them. Counting is enough: a task's sums
    are kept only with its staged part, and a work area resumed from an older featurizer has
    parts without them."""
    moments = stream.moments
    return moments if moments is not None and moments.count == counts["featurized"] else None


def featurize(
    spark: Any,
    store: storage.Storage,
    run: Run,
    source: Any,
    payload: engines.Payload,
    expected: int,
    skip: list[str],
    reader: Any = None,
    queue: str | None = None,
    gather: bool = False,
) -> StreamStats:
    """Stream the input (or its `queue`: FileSource.enqueue) through the UDF into staged
    Parquet, minus the `skip` paths; the workers read the files with `reader` if given.
    `gather`: the tasks also sum their rows for PCA, in files beside their staged parts
    (StreamStats.moments: every staged part's, a resumed run's earlier ones included); only
    where the workers write the staged parts (arrow_files.reachable)."""
    config, layout = run.config, run.layout
    sc = spark.sparkContext
    images_done = sc.accumulator(0)
    worker_rss = sc.accumulator(0.0, udf.MaxParam())
    gather = gather and arrow_files.reachable(layout.featurized, spark)
    # The engine travels once, as a broadcast that PySpark writes into Spark's local dir
    # (and on failure prints its own traceback: kept out of the console).
    with _failing("featurizing into", layout.featurized), contextlib.redirect_stderr(io.StringIO()):
        engine = sc.broadcast(payload.data)
    featurize_task = udf.make_featurize(
        engine,
        payload.key,
        payload.engine,
        config.inference_batch,
        images_done,
        worker_rss,
        gather,
        reader,
    )
    per_batch = config.batch_files(sc.defaultParallelism)
    per_trigger = min(per_batch, config.limit or per_batch)
    queue_files = max(1, per_batch // config.queue_file_paths)  # one a core by default
    stream = source.stream(spark, per_trigger, queue, queue_files)
    skipped = spark.createDataFrame([(path,) for path in skip], "path string") if skip else None
    resumed = _staged_rows(spark, layout)
    # A queue file is one small Parquet file, one task: spread its paths over the cores.
    spread = TASKS_PER_CORE * sc.defaultParallelism if queue is not None else None
    writer = BatchWriter(config, layout, store, featurize_task, resumed, skipped, spread)
    query = (
        stream.writeStream.foreachBatch(writer)
        .option("checkpointLocation", layout.checkpoint)
        .trigger(availableNow=True)
        .queryName(f"featurize-{uuid.uuid4().hex[:8]}")
        .start()
    )
    try:
        with Progress("featurize", max(expected - resumed, 1), lambda: images_done.value):
            while not query.awaitTermination(0.5):
                if signals.requested():
                    # Fail the micro-batch in flight (its files stay undone for --resume)
                    # rather than interrupt the query's thread: query.stop() mid-batch made
                    # Spark overflow its stack matching the Python error against a regex.
                    sc.cancelAllJobs()
                    with contextlib.suppress(Exception):
                        query.awaitTermination(60)
                    signals.check()
                if writer.limit_reached:
                    query.stop()
    except BaseException as exc:
        with contextlib.suppress(Exception):
            query.stop()
        signals.check()
        if isinstance(exc, (Stopped, KeyboardInterrupt)):
            raise
        raise _stage_error("featurizing into", layout.featurized, exc) from None
    return StreamStats(
        resumed=resumed,
        processed=int(images_done.value),
        worker_rss_mb=float(worker_rss.value),
        moments=_staged_moments(layout, spark) if gather else None,
    )


def _staged_moments(layout: Layout, spark: Any) -> reduce.Moments:
    """The sums the featurizing tasks left beside their staged parts, added."""
    total = reduce.Moments(FEATURE_DIM)
    for data in arrow_files.side_files(layout.featurized, udf.MOMENTS_SUFFIX, spark):
        total += reduce.Moments.from_bytes(data)
    return total


class BatchWriter:
    """foreachBatch sink: featurize one micro-batch of files into batch=N (idempotent)."""

    def __init__(
        self,
        config: RunConfig,
        layout: Layout,
        store: storage.Storage,
        featurize_task: udf.Partition,
        already_selected: int,
        skipped: Any = None,
        spread: int | None = None,
    ) -> None:
        self.config, self.layout, self.store = config, layout, store
        self.featurize_task, self.skipped, self.spread = featurize_task, skipped, spread
        self.selected = already_selected
        self.limit_reached = config.limit is not None and already_selected >= config.limit

    def __call__(self, files: Any, batch_id: int) -> None:
        if signals.requested():  # not committed: these files stay undone
            raise RuntimeError(f"featurizer: stopped before micro-batch {batch_id}")
        try:
            self._write(files, batch_id)
        except Exception:
            if signals.requested():  # a short error: the job was cancelled on purpose
                raise RuntimeError(f"featurizer: micro-batch {batch_id} stopped") from None
            raise

    def _write(self, files: Any, batch_id: int) -> None:
        from pyspark.sql import functions as F

        target = storage.join(self.layout.featurized, f"batch={batch_id:06d}")
        if self.limit_reached or self.store.exists(storage.join(target, "_SUCCESS")):
            # A run killed between staging a batch and checkpointing its commit replays
            # that batch (same files, same id): its rows are staged and counted already.
            return
        if self.skipped is not None:  # aliases: reached again through links
            files = files.join(F.broadcast(self.skipped), "path", "left_anti")
        if self.config.sample_fraction is not None:
            files = files.where(_sampled(self.config.sample_fraction))
        limit, taken = self.config.limit, None
        if limit is not None:
            files, taken = self._limited(files, limit)
        if self.spread is not None:
            files = files.repartition(self.spread)
        stage_rows(files, self.featurize_task, target)
        if limit is not None and taken is not None:  # only now: the driver stops on this flag
            self.selected += taken
            self.limit_reached = self.selected >= limit

    def _limited(self, files: Any, limit: int) -> tuple[Any, int]:
        """At most the files still needed under --limit: the oldest of the batch (the stream
        hands out files oldest first; the path breaks ties)."""
        remaining = limit - self.selected
        count = files.count()  # metadata only: no content read
        if count <= remaining:
            return files, count
        partitions = max(1, math.ceil(remaining / 128))
        oldest = files.orderBy("modificationTime", "path").limit(remaining)
        return oldest.repartition(partitions), remaining


def calibration_images(samples: list[tuple[str, bytes]]) -> tuple[str, list[Any]]:
    """The source's sample images preprocessed for the engine, with a digest of their bytes
    (which names the calibrated engine); images that do not decode are passed over."""
    import hashlib

    digest, decoded = hashlib.sha256(), []
    for _, data in samples:
        try:
            decoded.append(images.preprocess(images.decode(data)))
        except images.ImageError:
            continue
        digest.update(data)
    return digest.hexdigest(), decoded


def record_unread(
    spark: Any,
    store: storage.Storage,
    layout: Layout,
    listed: Any,
    unlisted: list[tuple[str, str]],
    known: Any = None,
) -> None:
    """Every listed file (a DataFrame of `path`) that produced no row, and every file the
    listing could not name (`unlisted`), becomes an error row, so found = featurized + failed;
    `known` paths (an incremental run's output) are not this run's. Spark's scan skips
    zero-byte files and, with ignoreMissingFiles, files deleted since the listing. Joined in
    Spark: only the unread files come to the driver, for their reasons."""
    done = (
        [spark.read.parquet(layout.featurized).select("path")] if _has_staged(store, layout) else []
    )
    done += [known] if known is not None else []
    missing = listed
    for paths in done:
        missing = missing.join(paths, "path", "left_anti")
    rows = [(row.path, _unread_reason(store, row.path)) for row in missing.toLocalIterator()]
    if unlisted:
        names = spark.createDataFrame(unlisted, "path string, error string")
        for paths in done:
            names = names.join(paths, "path", "left_anti")
        rows += [(row.path, row.error) for row in names.collect()]
    if not rows:
        return
    frame = _error_rows(spark.createDataFrame(rows, "path string, error string"))
    frame.coalesce(1).write.mode("overwrite").parquet(
        storage.join(layout.featurized, "batch=unread")
    )


def _error_rows(frame: Any) -> Any:
    """Rows of (path, error) in the staged shape: a label from the path, no features."""
    from pyspark.sql import functions as F

    return frame.select(
        "path",
        sources.label_of("path").alias("label"),
        F.lit(None).cast("long").alias("length"),
        F.lit(None).cast("timestamp").alias("modificationTime"),
        F.lit(None).cast(vectors.STAGED_TYPE).alias("features"),
        "error",
    )


def _unread_reason(store: storage.Storage, path: str) -> str:
    try:
        return reading.EMPTY if store.size(path) == 0 else "file was not read"
    except Exception as exc:
        if "FileNotFoundException" in str(exc) or "No such file" in str(exc):
            return udf.DISAPPEARED
        return f"file could not be read: {errors.cause(exc)}"


def _sampled(fraction: float) -> Any:
    """A deterministic pseudo-random subset keyed by path."""
    from pyspark.sql import functions as F

    bucket = F.pmod(F.xxhash64("path"), F.lit(1_000_000))
    return bucket < F.lit(int(round(fraction * 1_000_000)))


def _has_staged(store: storage.Storage, layout: Layout) -> bool:
    return any(name.startswith("batch=") for name in store.list_names(layout.featurized))


def _staged_rows(spark: Any, layout: Layout) -> int:
    """Rows of the micro-batches a previous attempt completed (batch=N/_SUCCESS). A batch it
    was writing when it was killed holds no rows yet, or only some: the stream writes it
    again (BatchWriter overwrites an incomplete batch)."""
    store = storage.Storage(spark)
    if not _has_staged(store, layout):
        return 0  # nothing staged yet
    complete = [
        storage.join(layout.featurized, name)
        for name in store.list_names(layout.featurized)
        if name.startswith("batch=")
        and store.exists(storage.join(layout.featurized, name, "_SUCCESS"))
    ]
    return spark.read.parquet(*complete).count() if complete else 0


def _read_staged(spark: Any, layout: Layout) -> Any:
    """The staged rows (the options reach Parquet's reader through the scan's Hadoop conf).
    Their schema is given: inferring it ran a Spark job over the part files' footers (0.1 s).
    The fingerprint's `staged_vectors` keeps a resumed run from meeting another layout."""
    reader = spark.read.options(**STAGED_READ_OPTIONS).schema(udf.STAGED_SCHEMA)
    return reader.parquet(layout.featurized)


def _vectors(staged: Any) -> Any:
    return staged.where("error IS NULL").select(*STAGED_VECTOR_COLUMNS)


def _counts(staged: Any, found: int) -> dict[str, int]:
    """The counts of staged rows (a DataFrame of STAGED_SCHEMA), aggregated by Spark."""
    from pyspark.sql import functions as F

    row = staged.agg(
        F.count(F.lit(1)).alias("selected"),
        F.sum(F.when(F.col("error").isNull(), 1).otherwise(0)).alias("featurized"),
        F.countDistinct(F.when(F.col("error").isNull(), F.col("label"))).alias("classes"),
        F.countDistinct("path").alias("distinct_paths"),
    ).first()
    return _counted(
        int(row["selected"] or 0),
        int(row["featurized"] or 0),
        int(row["classes"]),
        int(row["distinct_paths"]),
        found,
    )


def _staged_counts(spark: Any, uri: str, staged: Any, found: int) -> dict[str, int]:
    """The counts of the staged rows under `uri`, read from the part files with pyarrow where
    it reaches them (three small columns, several parts at once on S3: ~0.02 s at 14,410 rows
    locally against ~0.8 s for Spark's aggregation, whose two distinct counts cost a shuffle
    each), else by Spark (`staged`).
    Plain Python sets, not pyarrow.compute: its kernels' first use maps ~46 MB into the driver.
    The distinct paths are held meanwhile (~150 bytes an image)."""
    if not arrow_files.reachable(uri, spark):
        return _counts(staged, found)
    import pyarrow.parquet as pq

    location = arrow_files.locate(uri, spark)

    def columns(part: str) -> list[Any]:  # the part's batches of the three columns
        with location.fs.open_input_file(part) as file:
            return list(pq.ParquetFile(file).iter_batches(columns=["path", "label", "error"]))

    selected = featurized = 0
    labels: set[str] = set()
    paths: set[str] = set()
    parts = [part for part, _ in arrow_files.parquet_files(location)]
    for batches in location.each(columns, parts):
        for batch in batches:
            errors = batch.column("error")
            selected += batch.num_rows
            featurized += errors.null_count
            labels.update(
                label
                for label, error in zip(batch.column("label").to_pylist(), errors.to_pylist())
                if error is None and label is not None
            )
            paths.update(batch.column("path").to_pylist())
    return _counted(selected, featurized, len(labels), len(paths), found)


def _counted(
    selected: int, featurized: int, classes: int, distinct_paths: int, found: int
) -> dict[str, int]:
    return {
        "found": max(found, selected),
        "selected": selected,
        "featurized": featurized,
        "failed": selected - featurized,
        "classes": classes,
        "duplicate_paths": selected - distinct_paths,
    }


def _failure(
    counts: dict[str, int], config: RunConfig, errors_uri: str, adding: bool = False
) -> str | None:
    """Why the run cannot go on to PCA (too many broken files, or fewer than 2 images), or
    None. An incremental run (`adding`) is judged by its new files' error rate alone."""
    if counts["selected"] == 0:
        return None if adding else "no images were selected (check --limit / --sample-fraction)"
    rate = counts["failed"] / counts["selected"]
    if counts["featurized"] < 2 and not adding:
        return (
            f"only {counts['featurized']} image(s) could be featurized (PCA needs 2); "
            f"see {errors_uri}"
        )
    if rate > config.max_error_rate:
        return (
            f"{counts['failed']:,} of {counts['selected']:,} files could not be decoded "
            f"({rate:.1%} > --max-error-rate {config.max_error_rate:.1%}); see {errors_uri}"
        )
    return None


def _commit_failed_run(
    store: storage.Storage, run: Run, counts: dict[str, int], staged: Any
) -> None:
    """A failed run still leaves what a user needs to fix the input: errors/ and a manifest
    with status "failed" (output.commit_failed)."""
    layout = run.layout
    _write_errors(staged, layout.staged("errors"))
    manifest = {
        "status": "failed",
        "run_id": run.run_id,
        "output": layout.output,
        "counts": counts,
        "error_rate": counts["failed"] / max(counts["selected"], 1),
        "max_error_rate": run.config.max_error_rate,
        "warnings": run.warnings,
    }
    output.commit_failed(store, layout, report.manifest_json(manifest))


def _write_errors(staged: Any, uri: str, failed: int | None = None) -> None:
    """errors/: the staged rows with an error. Known to be none (`failed` == 0, the common
    case), the empty folder is written without a Spark job."""
    errors = staged.where("error IS NOT NULL").select("path", "error")
    if failed == 0 and arrow_files.reachable(uri, staged.sparkSession):
        arrow_files.write_empty(uri, errors.schema, staged.sparkSession)
        return
    errors.coalesce(1).write.mode("overwrite").parquet(uri)


def stage_rows(files: Any, featurize_task: udf.Partition, target: str) -> None:
    """Featurize a micro-batch of files (`content` included, or left for the workers to
    read) into the staged rows at `target`: written by the Python workers with pyarrow when
    it reaches `target` (the vectors never enter Spark's rows), else by Spark."""
    files = files.select(*(name for name in sources.FILE_COLUMNS if name in files.columns))
    if arrow_files.reachable(target, files.sparkSession):
        arrow_files.write_parts(
            files,
            target,
            featurize_task,
            _schema(udf.STAGED_SCHEMA),
            plain=("features",),
            row_group_rows=STAGED_ROW_GROUP_ROWS,
            page_rows=STAGED_PAGE_ROWS,
        )
        return
    rows = files.mapInArrow(featurize_task, udf.STAGED_SCHEMA)
    rows.write.options(**PLAIN_VECTORS).mode("overwrite").parquet(target)


def _staged_vectors_schema() -> Any:
    """The staged schema's STAGED_VECTOR_COLUMNS (a Spark StructType)."""
    from pyspark.sql.types import StructType

    staged = _schema(udf.STAGED_SCHEMA)
    return StructType([staged[name] for name in STAGED_VECTOR_COLUMNS])


def _schema(ddl: str) -> Any:
    from pyspark.sql.types import _parse_datatype_string

    return _parse_datatype_string(ddl)


def write_results(
    spark: Any,
    layout: Layout,
    featurized: Any | None,
    staged: Any,
    pca: reduce.PcaResult,
    rows: int,
    failed: int | None = None,
) -> None:
    """features/ (vectors and their projection), errors/ (`failed` rows, if known) and the
    PCA model, under the work area's result. `featurized` None: the staged rows' vectors,
    read by the workers themselves where pyarrow reaches the work area.

    Spark ML saves the model (two small jobs of the JVM's, 0.5 s of a local run) in a thread
    of its own while the Python workers project and write the rows."""
    files = output_files(rows, spark.sparkContext.defaultParallelism)
    target = layout.staged("features")
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="pca-model") as saver:
        saved = saver.submit(pca.model.write().overwrite().save, layout.staged("pca_model"))
        if featurized is None and arrow_files.reachable(layout.featurized, spark):
            write_staged_features(spark, layout.featurized, pca.components, target, files)
        else:
            vectors_ = _vectors(staged) if featurized is None else featurized
            write_features(vectors_.coalesce(files), pca.components, target)
        _write_errors(staged, layout.staged("errors"), failed)
        saved.result()


def write_features(featurized: Any, components: Any, uri: str) -> None:
    """The output's rows: `featurized` with its vectors as float arrays and their PCA
    projection. Written by the Python workers with pyarrow when it reaches `uri` (the
    batches go from the projection to Parquet without a copy into Spark's rows:
    arrow_files), else by Spark."""
    spark = featurized.sparkSession
    if arrow_files.reachable(uri, spark):
        index = featurized.columns.index("features")
        project = reduce.projection(components, index, "pca")
        arrow_files.write_parts(
            featurized,
            uri,
            lambda batches: map(project, batches),
            reduce.projected_schema(featurized.schema, "features", "pca"),
            plain=("features", "pca"),
        )
        return
    projected = reduce.project(featurized, components, "features", "pca")
    projected.write.options(**PLAIN_VECTORS).mode("overwrite").parquet(uri)


def write_staged_features(
    spark: Any, staged_uri: str, components: Any, uri: str, files: int
) -> None:
    """features/ from the staged parts under `staged_uri`, each task's Python worker reading
    its share of the part files with pyarrow: the JVM hands out file names, not ~5 KB of
    vector an image through its Parquet reader and into Arrow (at 90,380 images ~760 MB of
    heap garbage in pages and column chunks at the end of a run, which grew G1's heap)."""
    location = arrow_files.locate(staged_uri, spark)
    groups: list[list[str]] = [[] for _ in range(files)]
    sizes = [0] * files
    for path, size in sorted(arrow_files.parquet_files(location), key=lambda part: -part[1]):
        emptiest = sizes.index(min(sizes))  # the biggest part to the least loaded task
        groups[emptiest].append(path)
        sizes[emptiest] += size
    # A task's number picks its group (in the closure): a DataFrame of the names themselves
    # would come from a Python RDD, i.e. a second Python worker a task (forked: +0.6 s).
    tasks = spark.range(0, files, 1, files)
    project = reduce.projection(components, 2, "pca")
    fs = location.fs

    def read_and_project(batches: Iterator[Any]) -> Iterator[Any]:  # in a Python worker
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        for batch in batches:
            for task in batch.column(0).to_pylist():
                for path in groups[task]:
                    with fs.open_input_file(path) as file:
                        for rows in pq.ParquetFile(file).iter_batches(
                            VECTOR_BATCH, columns=[*STAGED_VECTOR_COLUMNS, "error"]
                        ):
                            kept = rows.filter(pc.is_null(rows.column("error")))
                            if kept.num_rows:
                                yield project(kept.select(list(STAGED_VECTOR_COLUMNS)))

    arrow_files.write_parts(
        tasks,
        uri,
        read_and_project,
        reduce.projected_schema(_staged_vectors_schema(), "features", "pca"),
        plain=("features", "pca"),
    )


def output_files(rows: int, cores: int) -> int:
    """Few large files, yet one per core (while files keep >= MIN_ROWS_PER_OUTPUT_FILE rows):
    a single file is written by a single task, which left the other cores idle for the
    whole write (4k images: 3.1 s on one of two cores)."""
    spread = min(cores, math.ceil(rows / MIN_ROWS_PER_OUTPUT_FILE))
    return max(1, math.ceil(rows / ROWS_PER_OUTPUT_FILE), spread)


# ---- failures ---------------------------------------------------------------------------


@contextlib.contextmanager
def _failing(action: str, uri: str) -> Iterator[None]:
    """Turn a storage failure inside the block into one line naming what was written."""
    try:
        yield
    except FeaturizerError:
        raise
    except Exception as exc:
        raise _stage_error(action, uri, exc) from None


def _stage_error(action: str, uri: str, exc: BaseException) -> FeaturizerError:
    cause = errors.cause(exc)
    if "no space left on device" in cause.lower():
        full = _full_local_folder([storage.local_path(uri) or "", *_spark_local_dirs()])
        where = f" ({full} is full)" if full and full != storage.local_path(uri) else ""
        return FeaturizerError(f"no space left on device {action} {uri}{where}")
    return FeaturizerError(f"{action} {uri} failed: {cause}")


def _spark_local_dirs() -> list[str]:
    from pyspark import SparkContext

    context = SparkContext._active_spark_context
    configured = context.getConf().get("spark.local.dir", "") if context else ""
    return [*filter(None, configured.split(",")), os.environ.get("TMPDIR", "/tmp")]


def _full_local_folder(candidates: list[str]) -> str | None:
    """The first existing folder among `candidates` (or its nearest existing parent) with
    less than 1 MiB free: which device the "No space left" was about."""
    for candidate in filter(None, candidates):
        folder = candidate
        while folder and not os.path.isdir(folder):
            folder = os.path.dirname(folder)
        try:
            stats = os.statvfs(folder)
        except OSError:
            continue
        if stats.f_bavail * stats.f_frsize < 1 << 20:
            return candidate
    return None


# ---- helpers ----------------------------------------------------------------------------


def _check_locations(input_uri: str, output_uri: str) -> None:
    if storage.is_inside(output_uri, input_uri):
        raise ConfigError(
            f"output {output_uri} is inside the input {input_uri}: the run would "
            f"read its own files; choose an output outside the input"
        )
    if storage.is_inside(input_uri, output_uri):
        raise ConfigError(f"input {input_uri} is inside the output {output_uri}")


def _expected(found: int, config: RunConfig) -> int:
    expected = found
    if config.sample_fraction is not None:
        expected = int(round(found * config.sample_fraction))
    if config.limit is not None:
        expected = min(expected, config.limit)
    return max(expected, 1)


def _fingerprint(
    config: RunConfig, input_uri: str, weights_file: weights.WeightsFile, stream: str
) -> dict:
    return {
        "input": input_uri,
        "weights_sha256": weights_file.sha256,
        "engine": config.engine,
        "precision": config.precision,
        "limit": config.limit,
        "sample_fraction": config.sample_fraction,
        "staged_vectors": vectors.FORMAT,
        "stream": stream,
    }


def _redacted(config: RunConfig) -> dict:
    values = config.to_dict()
    values["conf"] = [
        item.split("=", 1)[0] + "=***"
        if any(word in item.split("=", 1)[0].lower() for word in SECRET_WORDS)
        else item
        for item in config.conf
    ]
    return values


def _manifest(
    run: Run,
    spark: Any,
    counts: dict[str, int],
    pca: reduce.PcaResult,
    stream: StreamStats,
    status: str,
) -> dict:
    config, timer = run.config, run.timer
    total = timer.total()
    featurize_s = timer.stages.get("featurize", total)
    sc = spark.sparkContext
    return {
        "status": status,
        "run_id": run.run_id,
        "input": run.input_uri,
        "output": run.layout.output,
        "parameters": _redacted(config),
        "counts": {
            **{key: counts[key] for key in ("found", "selected", "featurized", "failed")},
            "resumed": stream.resumed,
            "processed_this_run": stream.processed,
            "aliases_skipped": len(run.local_scan.aliases),
        },
        "classes": counts["classes"],
        "pca": {
            "k": pca.k,
            "k_requested": config.pca_k,
            "model_source": pca.source,  # None: fitted on this run's images
            "covariance_summed": pca.summed,  # while featurizing, or from the staged rows
            "variance_target": None if config.pca_k or pca.source else config.pca_variance,
            "variance_explained": pca.variance_explained,
            "explained_variance": pca.explained,
        },
        "warnings": run.warnings,
        "timings_s": {**timer.stages, "total": round(total, 3)},
        "throughput": {
            "featurize_images_per_s": round(stream.processed / max(featurize_s, 1e-9), 2),
            "end_to_end_images_per_s": round(counts["selected"] / max(total, 1e-9), 2),
        },
        "memory_mb": {
            "driver_python_peak": udf.peak_rss_mb(),
            "driver_jvm_peak": _jvm_peak_rss_mb(spark),
            "python_worker_peak": round(stream.worker_rss_mb, 1),
        },
        "engine": {
            "name": config.engine,
            "precision": config.precision,
            "batch_size": config.inference_batch,
        },
        "weights": {"name": run.weights.name, "sha256": run.weights.sha256},
        "spark": {
            "master": sc.master,
            "application_id": sc.applicationId,
            "default_parallelism": sc.defaultParallelism,
            "files_per_batch": config.batch_files(sc.defaultParallelism),
            "task_cpus": int(sc.getConf().get("spark.task.cpus", "1")),
        },
        "versions": report.versions(spark.version),
        "started_at": run.started_at,
        "finished_at": _now(),
    }


def _jvm_peak_rss_mb(spark: Any) -> float | None:
    """Peak RSS of the driver JVM (it runs beside this process, in every deploy mode)."""
    try:
        return udf.peak_rss_mb(spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid())
    except Exception:  # no gateway JVM (e.g. Spark Connect)
        return None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
