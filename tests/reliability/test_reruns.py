"""Reruns, interruptions and crashes: nothing lost, nothing duplicated, same result."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from featurizer import pipeline, sample_data, weights
from featurizer.config import RunConfig
from featurizer.errors import ConfigError

from processes import is_python_worker, kill_session, session_processes, wait_for

BIN = Path(sys.executable).parent
IMAGES = 300
BATCH = 50


@pytest.fixture(scope="module")
def images300(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("three-hundred")
    sample_data.generate(folder, seed=11, scale=3)
    return folder


def start_run(input_dir: Path, output: Path, *extra: str) -> subprocess.Popen:
    """`featurizer run` in its own process group (so the JVM and workers die with it)."""
    return subprocess.Popen(
        [
            str(BIN / "featurizer"),
            "run",
            "--input",
            str(input_dir),
            "--output",
            str(output),
            "--files-per-batch",
            str(BATCH),
            "--pca-k",
            "4",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def finished_batches(output: Path) -> int:
    return len(list((output / "_work" / "featurized").glob("batch=*/_SUCCESS")))


def table(output: Path):
    frame = pq.read_table(output / "features").to_pandas().sort_values("path")
    return frame.reset_index(drop=True)


@pytest.fixture(scope="module")
def reference(spark, images300, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("reference") / "run"
    pipeline.run(
        RunConfig(input=str(images300), output=str(output), pca_k=4, files_per_batch=BATCH),
        spark=spark,
    )
    return output


def test_resume_continues_and_matches_an_uninterrupted_run(spark, images300, reference, tmp_path):
    output = tmp_path / "run"
    process = start_run(images300, output, "--master", "local[2]")
    wait_for(lambda: finished_batches(output) >= 2, 600, "2 micro-batches staged", process=process)
    kill_session(process)
    done_before = finished_batches(output)
    assert not (output / "_SUCCESS").exists()

    manifest = pipeline.run(
        RunConfig(
            input=str(images300), output=str(output), pca_k=4, files_per_batch=BATCH, resume=True
        ),
        spark=spark,
    )
    counts = manifest["counts"]
    assert counts["resumed"] >= done_before * BATCH
    assert counts["processed_this_run"] <= IMAGES - done_before * BATCH
    assert counts["featurized"] == IMAGES and counts["failed"] == 0
    # The tasks of this run saw only part of the rows: PCA sums the staged ones instead.
    assert manifest["pca"]["covariance_summed"] == "staged rows"

    resumed, uninterrupted = table(output), table(reference)
    assert resumed["path"].is_unique and len(resumed) == IMAGES
    assert resumed["path"].tolist() == uninterrupted["path"].tolist()
    assert np.array_equal(np.stack(resumed["features"]), np.stack(uninterrupted["features"]))
    assert np.allclose(np.stack(resumed["pca"]), np.stack(uninterrupted["pca"]), atol=1e-3)


@pytest.fixture(scope="module")
def interrupted(images300, tmp_path_factory) -> Path:
    """An output whose run was killed after its first micro-batch (default settings)."""
    output = tmp_path_factory.mktemp("interrupted") / "run"
    process = start_run(images300, output, "--master", "local[2]")
    wait_for(lambda: finished_batches(output) >= 1, 600, "a micro-batch staged", process=process)
    kill_session(process)
    return output


def snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under a folder: (mtime_ns, bytes)."""
    return {
        str(path.relative_to(folder)): (path.stat().st_mtime_ns, path.read_bytes())
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


@pytest.mark.parametrize(
    ("key", "options"),
    [
        ("input", {"input": "Training"}),
        ("weights_sha256", {"weights": "FULL"}),
        ("engine", {"engine": "keras"}),
        ("precision", {"precision": "int8"}),
        ("limit", {"limit": 100}),
        ("sample_fraction", {"sample_fraction": 0.5}),
    ],
)
def test_resume_refuses_different_settings(
    spark, images300, interrupted, weights_dir, key, options
):
    options = {**options}
    if options.get("input"):
        options["input"] = str(images300 / options["input"])
    if options.get("weights"):  # another file: another sha256
        options["weights"] = str(weights_dir / weights.FULL_FILE)
    work = snapshot(interrupted / "_work")
    assert "run.json" in work and any(name.endswith("/_SUCCESS") for name in work)
    with pytest.raises(
        ConfigError,
        match=rf" holds a run with other settings \({key} differ\); "
        r"--resume needs the same ",
    ):
        pipeline.run(
            RunConfig(
                **{"input": str(images300), "output": str(interrupted), "resume": True, **options}
            ),
            spark=spark,
        )
    assert snapshot(interrupted / "_work") == work  # still resumable as it was
    assert not (interrupted / "_SUCCESS").exists()


def test_resume_refuses_a_work_area_staged_by_an_older_featurizer(
    spark, images300, interrupted, tmp_path
):
    # An older featurizer staged array<float> vectors and did not name its staging in
    # run.json: resuming onto bytes-staged batches would mix two schemas.
    output = tmp_path / "run"
    shutil.copytree(interrupted, output)
    run_file = output / "_work" / "run.json"
    record = json.loads(run_file.read_text())
    assert record.pop("staged_vectors") == "float32 bytes"
    run_file.write_text(json.dumps(record))
    with pytest.raises(ConfigError, match=r"other settings \(staged_vectors differ\); "):
        pipeline.run(RunConfig(input=str(images300), output=str(output), resume=True), spark=spark)
    assert (output / "_work" / "run.json").read_text() == json.dumps(record)


def test_two_runs_give_identical_results(spark, images300, reference, tmp_path):
    pipeline.run(
        RunConfig(
            input=str(images300), output=str(tmp_path / "again"), pca_k=4, files_per_batch=BATCH
        ),
        spark=spark,
    )
    first, second = table(reference), table(tmp_path / "again")
    assert first["path"].tolist() == second["path"].tolist()
    assert np.array_equal(np.stack(first["features"]), np.stack(second["features"]))
    assert np.allclose(np.stack(first["pca"]), np.stack(second["pca"]), atol=1e-5)
    explained = [
        json.loads((out / "manifest.json").read_text())["pca"]["explained_variance"]
        for out in (reference, tmp_path / "again")
    ]
    assert np.allclose(explained[0], explained[1], atol=1e-9)


def test_overwrite_keeps_the_old_output_until_the_new_one_is_complete(
    spark, images300, reference, tmp_path
):
    output = tmp_path / "run"
    pipeline.run(RunConfig(input=str(images300 / "Test"), output=str(output), pca_k=2), spark=spark)
    old_rows = len(table(output))
    process = start_run(images300, output, "--overwrite", "--master", "local[2]")
    wait_for(lambda: finished_batches(output) >= 1, 600, "a micro-batch staged", process=process)
    kill_session(process)
    assert (output / "_SUCCESS").exists() and len(table(output)) == old_rows

    pipeline.run(
        RunConfig(
            input=str(images300), output=str(output), pca_k=4, files_per_batch=BATCH, overwrite=True
        ),
        spark=spark,
    )
    assert len(table(output)) == IMAGES and not (output / "_work").exists()


def _busy_python_workers(session: int) -> list[int]:
    """Python worker processes forked by the worker daemon in our run, currently on CPU."""
    daemons, workers = set(), []
    for process in session_processes(session):
        if is_python_worker(process.cmdline):
            daemons.add(process.pid)
            workers.append((process.pid, int(process.stat[1]), process.stat[0]))
    return [pid for pid, parent, state in workers if parent in daemons and state == "R"]


def test_python_worker_crash_is_retried_by_the_default_master(images300, tmp_path):
    """No --master: the default (local[*,3], 3 attempts per task) must retry the task whose
    Python worker died; plain local[*] would fail the run on the first crash."""
    output = tmp_path / "run"
    process = start_run(images300, output)
    killed: list[int] = []

    def killer() -> None:
        deadline = time.monotonic() + 600
        while not killed and time.monotonic() < deadline and process.poll() is None:
            if finished_batches(output) >= 1:
                for pid in _busy_python_workers(process.pid)[:1]:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
            time.sleep(0.05)

    thread = threading.Thread(target=killer)
    thread.start()
    log, _ = process.communicate(timeout=900)
    thread.join()
    assert killed, "no busy Python worker was found to kill"
    assert process.returncode == 0, log[-3000:]
    frame = table(output)
    assert len(frame) == IMAGES and frame["path"].is_unique
    assert json.loads((output / "manifest.json").read_text())["counts"]["failed"] == 0
