"""`make bench-listing`: what the driver spends on an input of N files, featurizing none.

For each size N (20k, 200k, 1M by default) it writes N small real JPEGs (a few 100x100 Fruits-360
photos copied, class folders of 500) under a temporary folder on local disk, then runs, in a
fresh process, the job's own driver-side code over them: `local_input.scan` (a local input's
listing: the walk's paths as Arrow strings), `pipeline.discover` -> `FileSource.listing`, the
structures `record_unread` builds (over a staged `path` column holding every file, as after a
complete stream), and the calibration sample choice (`FileSource.samples`). It records each
step's wall time, the high-water RSS (VmHWM) of the driver's Python process and of its JVM
after it, and the JVM heap still live after a full GC.
Over the --stream-sizes it also runs the real streaming source (`FileSource.stream`, the job's
options, a count-only foreachBatch) and measures what its checkpoint's file log holds per file.
The files are deleted afterwards. Prints a table, saves JSON under bench/results/.

    python bench/listing.py [--sizes 20000,200000,1000000] [--stream-sizes 20000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FRUITS = Path(
    os.environ.get("FEATURIZER_FRUITS360", ROOT.parent / "shared/datasets/fruits360-subset")
)
PER_FOLDER = 500
SOURCE_IMAGES = 8  # distinct JPEGs copied round robin
BLOCK = 4096  # a small file takes at least one block


# ---- input ---------------------------------------------------------------------------------


def source_images(count: int = SOURCE_IMAGES) -> list[bytes]:
    """The smallest real 100x100 Fruits-360 photos (one block each on disk)."""
    files = sorted((FRUITS / "Training").rglob("*.jpg"), key=lambda p: (p.stat().st_size, p))
    if not files:
        raise SystemExit(f"no JPEGs under {FRUITS / 'Training'} (set FEATURIZER_FRUITS360)")
    return [path.read_bytes() for path in files[:count]]


def create(folder: Path, count: int, images: list[bytes]) -> float:
    """`count` image files in class folders of PER_FOLDER, plus a staged Parquet `path` column
    holding every file (what `record_unread` reads after a complete stream). Returns seconds."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    start = time.monotonic()
    inputs = folder / "input"
    staged = folder / "output/_work/featurized/batch=000000"
    staged.mkdir(parents=True)
    schema = pa.schema([("path", pa.string())])
    chunk: list[str] = []
    with pq.ParquetWriter(staged / "part-00000.parquet", schema) as writer:
        for index in range(count):
            if index % PER_FOLDER == 0:
                classes = inputs / f"class_{index // PER_FOLDER:05d}"
                classes.mkdir(parents=True)
            path = classes / f"img_{index:07d}.jpg"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                os.write(fd, images[index % len(images)])
            finally:
                os.close(fd)
            chunk.append(f"file:{path}")
            if len(chunk) == 100_000 or index == count - 1:
                writer.write_table(pa.table({"path": chunk}, schema=schema))
                chunk = []
    (staged / "_SUCCESS").write_bytes(b"")
    return time.monotonic() - start


# ---- measurements, each in a fresh process --------------------------------------------------


def peak_mb(pid: int | str = "self") -> float | None:
    from featurizer import udf

    return udf.peak_rss_mb(pid)


class Marks:
    """Wall time of each step and the Python/JVM high-water RSS after it."""

    def __init__(self) -> None:
        self.steps: dict[str, dict[str, float | None]] = {}
        self.jvm_pid: int | None = None
        self.begin = time.perf_counter()

    def __call__(self, name: str, spark: Any = None) -> None:
        now = time.perf_counter()
        self.steps[name] = {
            "seconds": round(now - self.begin, 3),
            "python_hwm_mb": peak_mb(),
            "jvm_hwm_mb": peak_mb(self.jvm_pid) if self.jvm_pid else None,
            "jvm_live_heap_mb": live_heap_mb(spark) if spark is not None else None,
        }
        self.begin = time.perf_counter()


def live_heap_mb(spark: Any) -> float:
    """The JVM heap still in use after a full collection: what the driver keeps, not the heap
    the collector let grow (its high-water RSS, read before this)."""
    jvm = spark.sparkContext._jvm
    jvm.java.lang.System.gc()
    runtime = jvm.java.lang.Runtime.getRuntime()
    return round((runtime.totalMemory() - runtime.freeMemory()) / 2**20, 1)


def spark_session(folder: Path) -> Any:
    """The session `featurizer run` starts locally (job and local defaults), mapping the JVM
    class-data archive if one exists (never recording one)."""
    from featurizer import class_archive, session
    from featurizer.config import RunConfig

    config = RunConfig(input=str(folder / "input"), output=str(folder / "output"))
    archive = class_archive.for_this_jvm(record=False)
    return session.create(config, archive, log_file=folder / "spark.log")


def measure_listing(folder: str) -> dict:
    """The job's driver-side bookkeeping over `folder`/input, step by step."""
    from featurizer import local_input, pipeline, sources, storage
    from featurizer.output import Layout

    base, marks = Path(folder), Marks()
    uri = storage.normalize(str(base / "input"))
    marks("imports")
    scan = local_input.scan(str(base / "input"))
    marks("local_input.scan")
    spark = spark_session(base)
    marks.jvm_pid = int(spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid())
    marks("spark start", spark)
    source = sources.FileSource(uri, scan)
    listing = pipeline.discover(source, spark)
    marks("listing (FileSource.listing)", spark)
    store, layout = storage.Storage(spark), Layout(storage.normalize(str(base / "output")))
    pipeline.record_unread(spark, store, layout, listing.paths, listing.unreadable)
    marks("record_unread", spark)
    samples = source.samples(spark, store, listing, pipeline.CALIBRATION_IMAGES)
    marks("calibration sample (FileSource.samples)", spark)
    pipeline.calibration_images(samples)  # decodes the 128 images: numpy and PIL arrive
    marks("calibration_images (decode 128)", spark)
    unread_written = store.exists(storage.join(layout.featurized, "batch=unread"))
    # Where the listing's time goes (after the job's steps; Spark may answer from its cache).
    start = time.perf_counter()
    array = (
        spark.read.format("binaryFile")
        .option("recursiveFileLookup", "true")
        .option("pathGlobFilter", sources.IMAGE_GLOB)
        .load(uri)
        ._jdf.inputFiles()
    )
    count = len(array)
    jvm_s = time.perf_counter() - start
    start = time.perf_counter()
    list(array)  # what DataFrame.inputFiles() does: one Py4J round trip per element
    per_element_s = time.perf_counter() - start
    start = time.perf_counter()
    wrapped = spark.sparkContext._jvm.scala.collection.immutable.ArraySeq.unsafeWrapArray(array)
    joined = wrapped.mkString("\n").split("\n")  # the same paths in one round trip
    one_string_s = time.perf_counter() - start
    mean_path = sum(map(len, joined)) / max(1, len(joined))
    del joined
    result = {
        "files": listing.found,
        "mean_path_bytes": round(mean_path, 1),
        "steps": marks.steps,
        "unread_rows_written": unread_written,
        "samples": len(samples),
        "listing_breakdown_s": {
            "jvm listing (Spark's file index, as for S3)": round(jvm_s, 3),
            "py4j transfer, one call per path": round(per_element_s, 3),
            "py4j transfer, one joined string": round(one_string_s, 3),
        },
        "listing_breakdown_files": count,
    }
    spark.stop()
    return result


def measure_stream(folder: str) -> dict:
    """The real streaming source over `folder`/input, a count per micro-batch; what its
    checkpoint holds afterwards."""
    from featurizer import local_input, sources, storage
    from featurizer.config import RunConfig

    base, marks = Path(folder), Marks()
    scan = local_input.scan(str(base / "input"))
    spark = spark_session(base)
    marks.jvm_pid = int(spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid())
    marks("spark start", spark)
    per_trigger = RunConfig(input="x", output="y").files_per_batch  # the job's default
    checkpoint = base / "stream/_work/checkpoint"
    counts: list[int] = []
    query = (
        sources.FileSource(storage.normalize(str(base / "input")), scan)
        .stream(spark, per_trigger)
        .writeStream.foreachBatch(lambda frame, _: counts.append(frame.count()))
        .option("checkpointLocation", str(checkpoint))
        .trigger(availableNow=True)
        .start()
    )
    query.awaitTermination()
    marks("stream (count per batch)", spark)
    spark.stop()

    def sizes(sub: str) -> dict[str, int]:
        folder = checkpoint / sub
        files = [p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix != ".crc"]
        return {p.name: p.stat().st_size for p in files}  # .crc: local checksums, not on S3

    log, files = sizes("sources/0"), sum(counts)
    # Every 10th batch Spark compacts the log into N.compact (all entries so far) and deletes
    # the older files 10 minutes later: what the log holds is the newest compact file and
    # the batches after it.
    compacted = [int(name.split(".")[0]) for name in log if name.endswith(".compact")]
    since = max(compacted, default=-1)
    live = {
        name: size
        for name, size in log.items()
        if int(name.split(".")[0]) > since or name == f"{since}.compact"
    }
    entries = [
        json.loads(line)["path"]
        for name in live
        for line in (checkpoint / "sources/0" / name).read_text().splitlines()[1:]
    ]
    return {
        "files": files,
        "log_entries": len(entries),
        "mean_path_bytes": round(sum(map(len, entries)) / max(1, len(entries)), 1),
        "batches": len(counts),
        "files_per_batch": per_trigger,
        "steps": marks.steps,
        "source_log_bytes_on_disk": sum(log.values()),
        "source_log_files": log,
        "source_log_bytes": sum(live.values()),
        "source_log_bytes_per_file": round(sum(live.values()) / max(1, len(entries)), 1),
        "offsets_bytes": sum(sizes("offsets").values()),
        "commits_bytes": sum(sizes("commits").values()),
        "checkpoint_bytes": sum(
            p.stat().st_size for p in checkpoint.rglob("*") if p.is_file() and p.suffix != ".crc"
        ),
        "sample_log_line": (checkpoint / "sources/0/0").read_text().splitlines()[1][:300],
    }


def child(kind: str, folder: Path, timeout: float) -> dict:
    """One measurement in a fresh interpreter; its JSON is the last line it prints."""
    code = (
        f"import sys, json; sys.path.insert(0, {str(ROOT / 'bench')!r}); import listing; "
        f"print(json.dumps(listing.{kind}({str(folder)!r})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "FEATURIZER_FRUITS360": str(FRUITS)},
    )
    if out.returncode != 0:
        raise RuntimeError(f"{kind}({folder}) failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---- the run -------------------------------------------------------------------------------


def fitting(size: int, seconds_per_file: float | None, budget: float, scratch: Path) -> int:
    """`size`, or the largest multiple of 100k whose files can be written within `budget`
    seconds and fit on the scratch disk (0: none)."""
    limits = [size, int(shutil.disk_usage(scratch).free * 0.8 // (2 * BLOCK))]
    if seconds_per_file:
        limits.append(int(budget / seconds_per_file))
    fits = min(limits)
    return size if fits >= size else fits // 100_000 * 100_000


def row(name: str, values: list[str]) -> str:
    return f"{name:<40}" + "".join(f"{v:>12}" for v in values)


def table(results: dict) -> str:
    sizes = list(results["sizes"].values())
    steps = list(sizes[0]["steps"]) if sizes else []
    breakdown = list(sizes[0]["listing_breakdown_s"]) if sizes else []

    def hwm(step: dict) -> str:
        return f"{step['python_hwm_mb']:.0f}/{step['jvm_hwm_mb'] or 0:.0f}"

    lines = [row("files", [f"{s['files']:,}" for s in sizes]), "-" * (40 + 12 * len(sizes))]
    lines += [row("create files (s)", [f"{s['create_s']:.0f}" for s in sizes])]
    lines += [
        row(f"{k} (s)", [f"{s['steps'][k]['seconds']:.2f}" for s in sizes]) for k in steps[1:]
    ]
    lines += [
        row(f"  {k} (s)", [f"{s['listing_breakdown_s'][k]:.2f}" for s in sizes]) for k in breakdown
    ]
    lines += ["peak RSS python/JVM (MB) after:"]
    lines += [row(f"  {k}", [hwm(s["steps"][k]) for s in sizes]) for k in steps]
    lines += ["JVM heap live after a full GC (MB) after:"]
    lines += [
        row(f"  {k}", [f"{s['steps'][k]['jvm_live_heap_mb']:.0f}" for s in sizes])
        for k in steps
        if sizes[0]["steps"][k]["jvm_live_heap_mb"] is not None
    ]
    for stream in results["stream"].values():
        step = stream["steps"]["stream (count per batch)"]
        lines += [
            "",
            f"streaming file source over {stream['files']:,} files, {stream['batches']} "
            f"batches of {stream['files_per_batch']}: {step['seconds']:.1f} s, peak RSS "
            f"python/JVM {hwm(step)} MB, JVM live heap {step['jvm_live_heap_mb']:.0f} MB; "
            f"{stream['source_log_bytes']:,} bytes in sources/0 = "
            f"{stream['source_log_bytes_per_file']} bytes per file (mean path "
            f"{stream['mean_path_bytes']} bytes; offsets {stream['offsets_bytes']:,} B, "
            f"commits {stream['commits_bytes']:,} B)",
        ]
    lines += [f"note: {note}" for note in results["notes"]]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="20000,200000,1000000", help="input sizes (files)")
    parser.add_argument(
        "--stream-sizes", default="20000", help="sizes to run the streaming source over ('')"
    )
    parser.add_argument(
        "--create-budget", type=float, default=600, help="seconds allowed to write one size"
    )
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per measurement")
    parser.add_argument("--scratch", default=tempfile.gettempdir(), help="a local-disk folder")
    args = parser.parse_args()
    images = source_images()
    results: dict = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "processor": platform.processor() or platform.machine(),
        },
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "image_bytes": [len(data) for data in images],
        "files_per_folder": PER_FOLDER,
        "sizes": {},
        "stream": {},
        "notes": [],
    }
    sizes = sorted(int(size) for size in args.sizes.split(","))
    streams = {int(size) for size in args.stream_sizes.split(",") if size}
    if streams - set(sizes):
        sizes = sorted({*sizes, *streams})
        results["notes"].append("sizes added for the streaming measurement")
    seconds_per_file: float | None = None
    scratch = Path(tempfile.mkdtemp(prefix="featurizer-listing-", dir=args.scratch))
    try:
        for size in sizes:
            count = fitting(size, seconds_per_file, args.create_budget, scratch)
            if count != size:
                results["notes"].append(
                    f"{size:,} files would not be written within {args.create_budget:.0f} s "
                    f"or fit on disk here: measured {count:,} instead"
                    if count
                    else f"{size:,} files skipped: no time or disk for them"
                )
                if not count or str(count) in results["sizes"]:
                    continue
            folder = scratch / f"n{count}"
            print(f"[listing] writing {count:,} files under {folder}", flush=True)
            created = create(folder, count, images)
            seconds_per_file = created / count
            load = os.getloadavg()[0]
            print(f"[listing] {count:,} files written in {created:.0f} s; measuring", flush=True)
            measured = child("measure_listing", folder, args.timeout)
            measured.update(create_s=round(created, 1), loadavg_1min=[load, os.getloadavg()[0]])
            results["sizes"][str(count)] = measured
            if count in streams:
                print(f"[listing] streaming source over {count:,} files", flush=True)
                results["stream"][str(count)] = child("measure_stream", folder, args.timeout)
            shutil.rmtree(folder)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    results["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    print(table(results))
    target = ROOT / "bench" / "results" / f"listing-{time.strftime('%Y%m%d-%H%M%S')}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nsaved {target.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
