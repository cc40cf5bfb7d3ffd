"""The SparkSession for a run: local defaults, job tuning and storage settings.

Under spark-submit (clusters, the image, EMR) the launcher's settings win: job defaults
are only applied where nothing else set the key.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from featurizer import class_archive, storage
from featurizer.config import ARROW_BATCH, RunConfig

LOG4J = Path(__file__).with_name("log4j2.properties")
# All cores; a failed task (e.g. a crashed Python worker) is retried up to 3 times, as on a
# cluster (plain local[*] never retries).
LOCAL_MASTER = "local[*,3]"
READ_BUFFER = 8 << 10  # bytes: io.file.buffer.size (_small_read_buffers)


def launched_by_spark_submit() -> bool:
    return "PYSPARK_GATEWAY_PORT" in os.environ


def is_local(config: RunConfig) -> bool:
    """A local session this process launches itself (not spark-submit, not a cluster)."""
    return (
        config.master is not None
        and config.master.startswith("local")
        or (config.master is None and not launched_by_spark_submit())
    )


def job_defaults(config: RunConfig) -> dict[str, str]:
    """Settings this workload needs wherever it runs."""
    return {
        # Small Arrow batches: a worker holds few decoded images at a time.
        "spark.sql.execution.arrow.maxRecordsPerBatch": str(
            max(ARROW_BATCH, config.inference_batch)
        ),
        # Read tasks hold equal numbers of files: an image costs the same whatever its bytes.
        # Spark packs a task by bytes + openCostInBytes per file, largest files first, up to
        # the input's bytes per spark.sql.files.minPartitionNum (pipeline: a few tasks per
        # core) or maxPartitionBytes. Counted at 8 KB a file, ~5 KB images made tasks of
        # 1,949 and 2,147 files, one core idle ~1.5 s a micro-batch; at Spark's own 4 MB (and
        # no 128 MB cap, which made 32 small tasks) the bytes no longer decide
        # (BENCHMARKS.md, eighth round).
        "spark.sql.files.openCostInBytes": str(4 << 20),
        "spark.sql.files.maxPartitionBytes": str(1 << 40),
        "spark.python.worker.reuse": "true",
        # The staged vectors are read back (PCA, the output's write) by the vectorized
        # Parquet reader, whose binary column of 4,096 rows x 5 KB is one ~21 MB array per
        # file: on the heap, a G1 humongous allocation and a young GC each, and G1 grew the
        # local driver's heap for them (90,380 images: ~20 such GCs in the last 4 s, JVM peak
        # RSS 2.65-2.74 GB; off the heap: 1 and 2.26 GB, BENCHMARKS.md).
        "spark.sql.columnVector.offheap.enabled": "true",
        # Files deleted between the listing and the read (lifecycle rules, other writers) are
        # skipped by the scan instead of failing the task; the run records each as an error.
        "spark.sql.files.ignoreMissingFiles": "true",
        "spark.ui.showConsoleProgress": "false",
        "spark.executorEnv.TF_CPP_MIN_LOG_LEVEL": "2",
        # Spark ML calls native BLAS (OpenBLAS, in the image too) per row inside tasks that
        # already own their core; OpenBLAS's own threads only wake, spin and contend (PCA
        # projection of 4k rows: 4.2 s with them, 1.5 s without).
        "spark.executorEnv.OPENBLAS_NUM_THREADS": "1",
        **{f"spark.hadoop.{key}": value for key, value in storage.s3a_hadoop_conf().items()},
    }


def local_defaults(
    archive: class_archive.ClassArchive | None = None,
    verbose: bool = False,
    log_file: Path | None = None,
) -> dict[str, str]:
    """Settings for `featurizer run` on this machine (no spark-submit).

    FEATURIZER_JARS (comma-separated jar files, e.g. hadoop-aws + the AWS SDK bundle from
    `hack/fetch-jars.sh`) adds connectors that pip's PySpark does not ship. Spark logs its
    warnings and errors to `log_file`, and to the console only if `verbose`: featurizer
    prints its own progress and one line per failure."""
    jars = (
        {"spark.jars": os.environ["FEATURIZER_JARS"]} if os.environ.get("FEATURIZER_JARS") else {}
    )
    cds = f" {archive.java_options()}" if archive else ""
    logging = (
        f"-Dlog4j2.configurationFile=file:{LOG4J} "
        f"-Dfeaturizer.console.level={'warn' if verbose else 'off'} "
        f"-Dfeaturizer.log.file={log_file or os.devnull}"
    )
    workers = (
        {}
        if verbose or log_file is None
        else {  # their stderr: the log too
            "spark.python.daemon.module": "featurizer.worker_daemon",
            "spark.executorEnv.FEATURIZER_WORKER_LOG": str(log_file),
        }
    )
    return {
        **jars,
        **workers,
        "spark.driver.memory": "3g",
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.ui.enabled": "false",
        # C1 JIT only: a local run is short and its JVM shares the cores with the Python
        # workers; C2 compiles burned ~22 CPU-s of a 47 s, 4k-image run (per-thread CPU from
        # /proc), C1 ~3 s, for the same throughput at 16k images (BENCHMARKS.md).
        "spark.driver.extraJavaOptions": f"{logging} -XX:TieredStopAtLevel=1{cds}",
        # Above 32 folders Spark lists files with a job of one task per folder, for
        # executors to share; here the driver is the executor, and the 131-task job made the
        # first listing of 5,240 images 4.8 s against 1.7 s listed in place (BENCHMARKS.md).
        "spark.sql.sources.parallelPartitionDiscovery.threshold": str(1 << 20),
    }


@contextmanager
def started(
    config: RunConfig,
    log: Callable[[str], None],
    verbose: bool = False,
    log_file: Path | None = None,
) -> Iterator[Any]:
    """A session this process owns: a local one maps the JVM class-data archive (or records
    it on its first run, class_archive.py); stopped when the block ends."""
    archive = class_archive.for_this_jvm(record=True) if is_local(config) else None
    if archive is not None and archive.recording is not None:
        log(
            "first local run with this Java and Spark: the JVM records its classes at exit "
            "(once, ~15 s; later runs start faster)"
        )
    quiet = log_file is not None and not verbose and is_local(config)
    with _stderr_into(log_file) if quiet and log_file else contextlib.nullcontext():
        spark = create(config, archive, verbose, log_file)
    try:
        yield spark
    finally:
        with contextlib.suppress(Exception):  # a dead JVM: the run's own error is the one to report
            stop(spark)
        if archive is not None and class_archive.publish(archive):
            log(f"JVM class-data archive saved to {archive.path}")


def stop(spark: Any) -> None:
    """spark.stop(), leaving PySpark's accumulator server to stop in a background thread:
    its connection handler polls once a second for the shutdown flag, so stopping it waited
    0.5 s on average at the end of every run. Nothing reaches it once the JVM is stopped."""
    context = spark.sparkContext
    server = getattr(context, "_accumulatorServer", None)
    context._accumulatorServer = None
    try:
        spark.stop()
    finally:
        if server is not None:
            threading.Thread(target=server.shutdown, daemon=True, name="accumulators").start()


@contextmanager
def _stderr_into(log_file: Path) -> Iterator[None]:
    """The JVM inherits fd 2 when PySpark starts it: pointed at the run's log, what the JVM
    itself prints (`WARNING: Using incubator modules`, SLF4J notices, a crash's last words)
    goes there for the JVM's whole life instead of onto the console."""
    sys.stderr.flush()
    saved = os.dup(2)
    target = os.open(log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.dup2(target, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(target)


def create(
    config: RunConfig,
    archive: class_archive.ClassArchive | None = None,
    verbose: bool = False,
    log_file: Path | None = None,
) -> Any:
    """The session for `config`; a local one maps (or records) `archive` (class_archive.py)
    and logs as local_defaults says."""
    from pyspark import SparkConf
    from pyspark.sql import SparkSession

    local = is_local(config)
    if local:
        # Python workers must run this interpreter (the one with TensorFlow installed).
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        # The local JVM runs the tasks itself: job_defaults' OPENBLAS_NUM_THREADS, for it.
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    existing = SparkConf()
    settings = {
        **job_defaults(config),
        **(local_defaults(archive, verbose, log_file) if local else {}),
    }
    builder = SparkSession.builder.appName("featurizer")
    if config.master or not launched_by_spark_submit():
        builder = builder.master(config.master or LOCAL_MASTER)
    for key, value in settings.items():
        if not existing.contains(key):
            builder = builder.config(key, value)
    for key, value in config.spark_conf.items():
        builder = builder.config(key, value)
    handler = signal.getsignal(signal.SIGINT)
    spark = builder.getOrCreate()
    # PySpark installs its own SIGINT handler (cancel all jobs, raise KeyboardInterrupt);
    # the caller's (featurizer.signals: stop between steps) stays in charge.
    if handler is not None and signal.getsignal(signal.SIGINT) is not handler:
        signal.signal(signal.SIGINT, handler)
    _use_s3a_for_s3(spark)
    _small_read_buffers(spark)
    _no_local_checksum_files(spark)
    return spark


def _use_s3a_for_s3(spark: Any) -> None:
    """s3:// means S3A unless the platform (EMR's EMRFS) already maps it."""
    hadoop_conf = spark.sparkContext._jsc.hadoopConfiguration()
    if not hadoop_conf.get("fs.s3.impl"):
        hadoop_conf.set("fs.s3.impl", "org.apache.hadoop.fs.s3a.S3AFileSystem")


def _small_read_buffers(spark: Any) -> None:
    """Files are opened with a buffer of `io.file.buffer.size`, which Spark sets to its own
    `spark.buffer.size` (64 KB) over any `spark.hadoop.` value: a 64 KB array zeroed for
    each ~5 KB image was the hottest Java frame of a local run (18% of the JVM's samples).
    Images and the staged Parquet chunks are read whole, so a small buffer costs nothing.
    A value the user set in the session's Hadoop configuration stays."""
    hadoop_conf = spark.sparkContext._jsc.hadoopConfiguration()
    if hadoop_conf.get("io.file.buffer.size") != spark.conf.get("spark.buffer.size", "65536"):
        return
    # The session's configuration reaches tasks in other JVMs; this JVM's tasks use the
    # cached local file system, made earlier from a configuration of its own.
    local = spark.sparkContext._jvm.org.apache.hadoop.fs.FileSystem.getLocal(hadoop_conf)
    for conf in (hadoop_conf, local.getConf()):
        conf.set("io.file.buffer.size", str(READ_BUFFER))


def _no_local_checksum_files(spark: Any) -> None:
    """Local files are read and written without Hadoop's ".NAME.crc" side files.

    Its checksummed local file system derives a ".NAME.crc" path for every file it opens,
    and cannot parse that path when NAME holds a colon (12:30:01.jpg): the whole run failed
    with URISyntaxException. Swapping in RawLocalFileSystem (fs.file.impl) is not an option:
    S3A's upload buffers cast FileSystem.getLocal() to LocalFileSystem. So the cached local
    file system, which this JVM's tasks share, is told not to verify or write checksums.
    Executors in other JVMs (clusters) keep Hadoop's default; they read object stores."""
    jvm = spark.sparkContext._jvm
    local = jvm.org.apache.hadoop.fs.FileSystem.getLocal(
        spark.sparkContext._jsc.hadoopConfiguration()
    )
    local.setVerifyChecksum(False)
    local.setWriteChecksum(False)
