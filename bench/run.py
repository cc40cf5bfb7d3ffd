"""`make bench`: every number the performance issue asks for, measured in one run.

Prints one table and saves the figures as JSON under bench/results/. Each measurement runs
in its own process so engines, thread pools and JVMs do not disturb each other.

    python bench/run.py [--images 4000] [--scales 1000,4000,16000] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DATA = Path(os.environ.get("FEATURIZER_BENCH_DATA", "~/.cache/featurizer/bench-data")).expanduser()
BRACKET_IMAGES = 1024  # per process, for each bare figure around a target run (~7 s)
GFLOP_PER_IMAGE = 0.6  # MobileNetV2 1.0/224: ~0.30 GMAC = 0.6 GFLOP


# ---- measurements run in child processes ---------------------------------------------------


def sgemm_gflops(size: int = 2048, repeats: int = 5) -> float:
    a = np.random.default_rng(0).random((size, size), dtype=np.float32)
    b = a.T.copy()
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def sample_images(count: int) -> np.ndarray:
    """Decoded, preprocessed real fruit photos when available, else the synthetic sample."""
    from featurizer import images

    folder = Path(
        os.environ.get("FEATURIZER_FRUITS360", ROOT.parent / "shared/datasets/fruits360-subset")
    )
    files = sorted(folder.rglob("*.jpg"))[:count] or sorted(synthetic(count).rglob("*.jpg"))[:count]
    decoded, _ = images.decode_many([path.read_bytes() for path in files])
    return images.preprocess(decoded)


def bare_engine(
    engine: str,
    threads: int,
    batch: int,
    count: int,
    precision: str = "float32",
    barrier: bool = False,
) -> float:
    """images/s of one engine instance, preprocessed images in memory (no decode, no Spark).
    With `barrier`, it says "ready" once loaded and starts timing at a line on stdin."""
    from featurizer import engines, weights

    pool = sample_images(256)
    payload = engines.export(
        engine, weights.resolve(), precision, lambda: ("bench-pool", list(pool[::2]))
    )
    predictor = engines.load(engine, payload.data, threads)
    predictor.predict(pool[:batch])
    if barrier:
        print("ready", flush=True)
        sys.stdin.readline()
    done, start = 0, time.perf_counter()
    while done < count:
        offset = done % (len(pool) - batch)
        predictor.predict(pool[offset : offset + batch])
        done += batch
    if barrier:
        print(f"done {done}", flush=True)
    return done / (time.perf_counter() - start)


def decode_rate(count: int = 2000) -> float:
    from featurizer import images

    files = [p.read_bytes() for p in sorted(synthetic(1000).rglob("*.jpg"))]
    start = time.perf_counter()
    for index in range(count):
        images.preprocess(images.decode(files[index % len(files)])[None])
    return count / (time.perf_counter() - start)


def child(kind: str, *args: str) -> float:
    """Run one measurement in a fresh interpreter; returns its number."""
    code = (
        f"import sys; sys.path.insert(0, {str(ROOT / 'bench')!r}); import run; "
        f"print(run.{kind}(*{[int(a) if a.isdigit() else a for a in args]!r}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    if out.returncode != 0:
        raise RuntimeError(f"{kind}{args} failed:\n{out.stderr[-2000:]}")
    return float(out.stdout.strip().splitlines()[-1])


def parallel_bare(
    engine: str, processes: int, batch: int, count: int, precision: str = "float32"
) -> float:
    """`processes` single-threaded engines at once, like Spark's Python workers: all the
    images they did over the time from a common start (once all are loaded) to the last one's
    end. A sum of each process's own rate counted the time one ran alone on the machine
    (500-560 img/s on 2 cores whose one process does 241)."""
    code = (
        f"import sys; sys.path.insert(0, {str(ROOT / 'bench')!r}); import run; "
        f"print(run.bare_engine({engine!r}, 1, {batch}, {count}, {precision!r}, barrier=True))"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        )
        for _ in range(processes)
    ]
    for proc in procs:  # all loaded
        assert proc.stdout is not None
        while proc.stdout.readline().strip() != "ready":
            if proc.poll() is not None:
                raise RuntimeError(f"bare {engine} exited before it was ready")
    start = time.monotonic()
    for proc in procs:  # then all at once
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    images = 0
    for proc in procs:
        assert proc.stdout is not None
        images += int(proc.stdout.readline().split()[1])  # "done N"
    elapsed = time.monotonic() - start  # the last one is done
    for proc in procs:
        proc.communicate()
    return images / elapsed


# ---- data and whole-job runs -----------------------------------------------------------------


def synthetic(count: int) -> Path:
    """`count` synthetic 100x100 JPEGs (a multiple of 100), generated once and cached."""
    from featurizer import sample_data

    scale = max(1, count // 100)
    folder = DATA / f"synthetic-{scale * 100}"
    if not (folder / ".done").exists():
        shutil.rmtree(folder, ignore_errors=True)
        sample_data.generate(folder, seed=7, scale=scale)
        (folder / ".done").write_text("")
    return folder


def fruits360() -> Path:
    return Path(
        os.environ.get("FEATURIZER_FRUITS360", ROOT.parent / "shared/datasets/fruits360-subset")
    )


def replicated(count: int) -> Path:
    """`count` real Fruits-360 images: the subset's files hard-linked (copied where links
    cannot be made) under distinct names, `<split>/<class>/r<copy>_<name>`, until there are
    `count`. Made once and cached; a different image per name is what the job sees."""
    folder = DATA / f"fruits360-{count}"
    if (folder / ".done").exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    source = fruits360()
    files = sorted(p for p in source.glob("*/*/*") if p.suffix.lower() == ".jpg")
    for index in range(count):
        original = files[index % len(files)]
        target = (
            folder / original.relative_to(source).parent / f"r{index // len(files)}_{original.name}"
        )
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(original, target)
        except OSError:
            shutil.copyfile(original, target)
    (folder / ".done").write_text("")
    return folder


def targets(full: bool) -> dict:
    """The performance issue's targets, each measured whole (process wall time): the job on
    >= 14k real images against the bare engine, the default run (report on) on the 5,240
    Training images against the notebook recipe on the same folder, and with `full` the
    90,380 images of Fruits-360's size with default options."""
    training = fruits360() / "Training"
    results = {
        "real_14410": bracketed(
            lambda: job_rates(job(replicated(14_410), "tflite", ("--pca-k", "50")))
        ),
        "training_default": job_rates(job(training, "tflite", report=True)),
        "recipe_training": baseline(training),
    }
    if full:
        results["real_90380"] = job_rates(job(replicated(90_380), "tflite", report=True))
    return results


def bracketed(run: Callable[[], dict]) -> dict:
    """`run`'s rates with the bare engine measured just before and just after it
    (`bare_before_after`): this machine's speed drifts by several percent within minutes
    (bare 293.9 and 281.3 img/s in two benches an hour apart), so a ratio to the bare engine
    takes the bare figure of the same minutes."""
    before = parallel_bare("tflite", 2, 1, BRACKET_IMAGES, "float32")
    rates = run()
    after = parallel_bare("tflite", 2, 1, BRACKET_IMAGES, "float32")
    return {**rates, "bare_before_after": [round(before, 1), round(after, 1)]}


def first_run() -> float:
    """The wall time of a short run that pays what only a machine's first run pays (the
    JVM's class-data archive, recorded at its exit; the engine's conversion), so that the
    timed runs after it are the ones a user makes every day (one bench, made on a fresh
    machine, had its first target run 10 s slower for it)."""
    return job(synthetic(200), "tflite", ("--pca-k", "2"))["wall_s"]


def job(folder: Path, engine: str, extra: tuple[str, ...] = (), report: bool = False) -> dict:
    """`featurizer run` as a user runs it; returns its manifest plus the outside wall time
    (and the report's linear probe when `report`)."""
    engine, _, precision = engine.partition("-")
    extra = (*extra, "--precision", precision or "float32", *(() if report else ("--no-report",)))
    with tempfile.TemporaryDirectory(prefix="bench-out-") as out:
        start = time.monotonic()
        process = subprocess.Popen(
            [
                str(BIN / "featurizer"),
                "run",
                "--input",
                str(folder),
                "--output",
                out + "/run",
                "--engine",
                engine,
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        cpu = cpu_seconds_by_kind(process)
        wall = time.monotonic() - start
        if process.returncode:
            raise RuntimeError(f"featurizer run failed: {process.stdout.read()[-3000:]!r}")
        manifest = json.loads(Path(out, "run", "manifest.json").read_text())
        manifest["cpu_s"] = cpu
        if report:
            written = json.loads(Path(out, "run", "report.json").read_text())
            manifest["report_s"] = written["report_seconds"]["total"]
            manifest["probe_test_accuracy"] = {
                name: round(result["test_accuracy"], 4)
                for name, result in written["probe"]["results"].items()
            }
    manifest["wall_s"] = round(wall, 2)
    return manifest


def cpu_seconds_by_kind(process: subprocess.Popen, interval: float = 0.5) -> dict:
    """Wait for `process`, sampling the CPU time (user + system) of its whole process tree:
    where the cores went (JVM, Python workers, driver Python). Returns when it exits, not at
    the next sample (a sleep between samples added 0-0.5 s to every timed run)."""
    import threading

    ticks = os.sysconf("SC_CLK_TCK")
    last: dict[int, tuple[str, float]] = {}
    output = threading.Thread(target=process.stdout.read, daemon=True)  # never block on a pipe
    output.start()
    while True:
        done = process.poll() is not None
        for pid in process_tree(process.pid):
            try:
                stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                argv0, *rest = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            kind = (
                "jvm"
                if argv0.endswith(b"java")
                else "python_workers"
                if (b"pyspark.daemon" in rest or b"featurizer.worker_daemon" in rest)
                else "driver_python"
            )
            if pid in last and not argv0:  # an exited (zombie) process has no cmdline
                kind = last[pid][0]
            last[pid] = (kind, (int(stat[11]) + int(stat[12])) / ticks)
        if done:
            break
        with contextlib.suppress(subprocess.TimeoutExpired):  # returns as soon as it exits
            process.wait(timeout=interval)
    totals: dict[str, float] = {}
    for kind, seconds in last.values():
        totals[kind] = round(totals.get(kind, 0.0) + seconds, 1)
    return totals


def process_tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(parent, []).append(int(entry.name))
    tree, stack = [], [root]
    while stack:
        pid = stack.pop()
        tree.append(pid)
        stack.extend(children.get(pid, []))
    return tree


def accuracy(engines: list[str]) -> dict:
    """Linear-probe Test accuracy (Training -> Test) of each engine/precision on the real
    Fruits-360 subset: the criterion for keeping a reduced-precision mode."""
    folder = Path(
        os.environ.get("FEATURIZER_FRUITS360", ROOT.parent / "shared/datasets/fruits360-subset")
    )
    if not (folder / "Training").is_dir():
        return {}
    return {
        engine: job(folder, engine, ("--pca-variance", "0.95"), report=True)["probe_test_accuracy"]
        for engine in engines
    }


def baseline(folder: Path) -> dict:
    weights_dir = Path(os.environ["FEATURIZER_WEIGHTS_DIR"])
    full = weights_dir / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5"
    with tempfile.TemporaryDirectory(prefix="bench-baseline-") as out:
        start = time.monotonic()
        result = subprocess.run(
            [
                sys.executable,
                str(ROOT / "bench" / "baseline.py"),
                str(folder),
                out + "/features",
                str(full),
            ],
            check=True,
            capture_output=True,
            text=True,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        )
        wall = time.monotonic() - start
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    # Whole process timed, like the job (the recipe's own figure starts after Python's start).
    measured["images_per_s_in_process"] = measured["images_per_s"]
    measured["images_per_s"] = round(measured["images"] / wall, 2)
    return measured


def job_rates(manifest: dict) -> dict:
    timings = manifest["timings_s"]
    images = manifest["counts"]["selected"]
    after_start = timings["total"] - timings.get("spark_start", 0)
    return {
        "images": images,
        "featurize_ips": manifest["throughput"]["featurize_images_per_s"],
        "job_ips_excl_spark_start": round(images / after_start, 1),
        "end_to_end_ips": round(images / manifest["wall_s"], 1),
        "timings_s": timings,
        "memory_mb": manifest.get("memory_mb", {}),
        "cpu_s": manifest.get("cpu_s", {}),
        "cpu_ms_per_image": {
            kind: round(1000 * seconds / max(images, 1), 2)
            for kind, seconds in manifest.get("cpu_s", {}).items()
        },
        "wall_s": manifest["wall_s"],
        **({"report_s": manifest["report_s"]} if "report_s" in manifest else {}),
    }


# ---- the table ---------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4000, help="images for the job comparison")
    parser.add_argument("--scales", default="1000,4000,16000", help="scale sweep sizes")
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    parser.add_argument(
        "--full", action="store_true", help="targets: also 90,380 images, default options (~8 min)"
    )
    parser.add_argument(
        "--only-targets",
        action="store_true",
        help="only the issue's targets and the bare engine they are measured against",
    )
    args = parser.parse_args()
    if args.quick:
        args.images, args.scales = 400, "200,400"
    engines = available_engines()
    results: dict = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "processor": platform.processor() or platform.machine(),
        },
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }

    if args.only_targets:
        say("bare engine, then the targets")
        bare = parallel_bare(engines[0], 2, 1, 512, "float32")
        results["bare"] = {engines[0]: {"2 processes x 1 thread x batch 1": round(bare, 1)}}
        results["first_run_wall_s"] = first_run()
        results["targets"] = targets(args.full)
        results["ratios"] = target_ratios(results, engines[0])
        save(results)
        return
    say("numpy sgemm")
    results["sgemm_gflops"] = round(child("sgemm_gflops"), 1)
    say("decode + resize")
    results["decode_ips_one_core"] = round(child("decode_rate"), 1)
    say("bare engines")
    results["bare"] = bare_sweep(engines, quick=args.quick)
    results["first_run_wall_s"] = first_run()
    folder = synthetic(args.images)
    say(f"jobs on {args.images} images")
    results["jobs"] = {engine: job_rates(job(folder, engine)) for engine in engines}
    say("linear-probe accuracy per precision (Fruits-360 subset)")
    results["accuracy"] = {} if args.quick else accuracy(["tflite", "tflite-int8"])
    say("notebook baseline")
    results["baseline"] = baseline(folder)
    say("scale sweep")
    results["scale"] = {
        str(n): job_rates(job(synthetic(n), engines[0])) for n in map(int, args.scales.split(","))
    }
    say("the issue's targets (real images)")
    results["targets"] = {} if args.quick else targets(args.full)
    results["ratios"] = {
        **ratios(results, engines[0]),
        **(target_ratios(results, engines[0]) if results["targets"] else {}),
    }
    save(results)


def save(results: dict) -> None:
    results["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    print(table(results))
    target = ROOT / "bench" / "results" / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nsaved {target.relative_to(ROOT)}")


def available_engines() -> list[str]:
    from featurizer.config import DEFAULT_ENGINE, ENGINES

    return [DEFAULT_ENGINE, *(e for e in ENGINES if e != DEFAULT_ENGINE), "tflite-int8"]


def bare_sweep(engines: list[str], quick: bool) -> dict:
    count = 128 if quick else 512
    sweep: dict = {}
    for name in engines:
        engine, _, precision = name.partition("-")
        precision = precision or "float32"
        rows = {}
        batches = (1, 8) if engine == "tflite" else (16, 64)
        for threads in (1, 2):
            for batch in batches:
                rows[f"{threads} thread x batch {batch}"] = round(
                    child("bare_engine", engine, str(threads), str(batch), str(count), precision), 1
                )
        best_batch = 1 if engine == "tflite" else 64
        rows[f"2 processes x 1 thread x batch {best_batch}"] = round(
            parallel_bare(engine, 2, best_batch, count, precision), 1
        )
        sweep[name] = rows
    return sweep


def ratios(results: dict, default: str) -> dict:
    bare_best = max(results["bare"][default].values())
    job_ = results["jobs"][default]
    int8 = results["jobs"].get(f"{default}-int8")
    accuracy = results.get("accuracy", {})
    drops = {}
    if accuracy.get(default) and accuracy.get(f"{default}-int8"):
        drops = {
            f"int8_probe_drop_points_{name}": round(
                100 * (accuracy[default][name] - accuracy[f"{default}-int8"][name]), 2
            )
            for name in accuracy[default]
        }
    scale = results["scale"]
    small, large = scale[min(scale, key=int)], scale[max(scale, key=int)]
    achieved = job_["featurize_ips"] * GFLOP_PER_IMAGE
    return {
        "bare_best_ips": bare_best,
        "featurize_stage_over_bare": round(job_["featurize_ips"] / bare_best, 3),
        "job_excl_start_over_bare": round(job_["job_ips_excl_spark_start"] / bare_best, 3),
        "end_to_end_over_bare": round(job_["end_to_end_ips"] / bare_best, 3),
        "job_over_baseline": round(job_["end_to_end_ips"] / results["baseline"]["images_per_s"], 2),
        "achieved_gflops": round(achieved, 1),
        "achieved_over_sgemm": round(achieved / results["sgemm_gflops"], 3),
        "largest_over_smallest_scale": round(
            large["job_ips_excl_spark_start"] / small["job_ips_excl_spark_start"], 3
        ),
        **(
            {"int8_job_over_float32_job": round(int8["featurize_ips"] / job_["featurize_ips"], 2)}
            if int8
            else {}
        ),
        **drops,
    }


def target_ratios(results: dict, default: str) -> dict:
    """Each target of the performance issue as measured / target, from this run alone."""
    real, default_run = results["targets"]["real_14410"], results["targets"]["training_default"]
    bare = sum(real["bare_before_after"]) / 2
    recipe = results["targets"]["recipe_training"]["images_per_s"]
    measured = {
        "target_end_to_end_14410_over_bare (>= 0.8)": round(real["end_to_end_ips"] / bare, 3),
        "target_default_5240_over_recipe (>= 5)": round(default_run["end_to_end_ips"] / recipe, 2),
        "target_report_share_of_wall_5240 (<= 0.05)": round(
            default_run["report_s"] / default_run["wall_s"], 3
        ),
    }
    if "real_90380" in results["targets"]:
        measured["target_wall_s_90380 (<= 480)"] = results["targets"]["real_90380"]["wall_s"]
    return measured


def table(results: dict) -> str:
    lines = [f"{'measurement':<58} {'value':>12}", "-" * 71]
    add = lambda name, value: lines.append(f"{name:<58} {value:>12}")  # noqa: E731
    if "sgemm_gflops" in results:
        add("numpy sgemm (GFLOP/s, all cores)", results["sgemm_gflops"])
        add("decode + resize + preprocess (images/s, 1 core)", results["decode_ips_one_core"])
    for engine, rows in results["bare"].items():
        for name, value in rows.items():
            add(f"bare {engine}: {name} (images/s)", value)
    if "first_run_wall_s" in results:
        add("first run, 200 images, one-time caches made (wall s)", results["first_run_wall_s"])
    for name, rates in results.get("targets", {}).items():
        if "images_per_s" in rates:  # the notebook recipe
            add(f"target run {name}, {rates['images']} images (img/s)", rates["images_per_s"])
            continue
        add(
            f"target run {name}, {rates['images']} images: end to end (img/s)",
            rates["end_to_end_ips"],
        )
        if "bare_before_after" in rates:
            add(
                f"target run {name}: bare before/after (img/s)",
                "/".join(map(str, rates["bare_before_after"])),
            )
        add(
            f"target run {name}: wall s (report s)",
            f"{rates['wall_s']} ({rates.get('report_s', '-')})",
        )
        add(
            f"target run {name}: CPU ms/image JVM/workers/driver",
            "/".join(
                str(rates["cpu_ms_per_image"].get(kind, 0))
                for kind in ("jvm", "python_workers", "driver_python")
            ),
        )
        memory = rates["memory_mb"]
        add(
            f"target run {name}: peak MB driver JVM/python, worker",
            f"{memory.get('driver_jvm_peak', '?')}/{memory.get('driver_python_peak', '?')}, "
            f"{memory.get('python_worker_peak', '?')}",
        )
    for engine, rates in results.get("jobs", {}).items():
        add(
            f"job {engine}, {rates['images']} images: featurize stage (img/s)",
            rates["featurize_ips"],
        )
        add(f"job {engine}: excluding Spark start-up (img/s)", rates["job_ips_excl_spark_start"])
        add(f"job {engine}: end to end, process wall time (img/s)", rates["end_to_end_ips"])
        add(
            f"job {engine}: seconds start/discover/featurize/reduce/write",
            "/".join(
                str(round(rates["timings_s"].get(stage, 0), 1))
                for stage in ("spark_start", "discover", "featurize", "reduce", "write")
            ),
        )
        add(
            f"job {engine}: CPU s JVM/python workers/driver python",
            "/".join(
                str(rates["cpu_s"].get(kind, 0))
                for kind in ("jvm", "python_workers", "driver_python")
            ),
        )
        memory = rates["memory_mb"]
        add(
            f"job {engine}: peak RSS driver python / worker (MB)",
            f"{memory.get('driver_python_peak', '?')}/{memory.get('python_worker_peak', '?')}",
        )
    if "baseline" in results:
        add(
            f"notebook baseline, {results['baseline']['images']} images (img/s)",
            results["baseline"]["images_per_s"],
        )
    for name, scores in results.get("accuracy", {}).items():
        for column, value in scores.items():
            add(f"linear probe Test accuracy, {name}, from {column}", value)
    for n, rates in results.get("scale", {}).items():
        add(
            f"scale {n}: job excl. start-up / end to end (img/s)",
            f"{rates['job_ips_excl_spark_start']}/{rates['end_to_end_ips']}",
        )
    for name, value in results["ratios"].items():
        add(f"ratio {name}", value)
    return "\n".join(lines)


def say(message: str) -> None:
    print(f"bench: {message} ...", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
