"""How a run ends when it cannot go on: one line with the innermost cause, the exit code that
says what kind of failure it was (2 configuration, 1 failed run, 130 SIGINT, 143 SIGTERM),
the full trace in a log file whose path is printed, `_work/` kept for --resume and no
process of the run left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from featurizer import pipeline, sample_data
from featurizer.config import RunConfig

from processes import session_processes

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    sample_data.generate(folder, seed=21, scale=2)  # 200 images
    return folder


@pytest.fixture
def tiny_disk(tmp_path):
    """A 4 MiB tmpfs: a full disk on demand (mount needs root, as CI has)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs for the disk-full tests: {result.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(folder: Path, leave: int) -> None:
    """Fill the file system of `folder` until `leave` bytes are free."""
    stats = os.statvfs(folder)
    (folder / "filler").write_bytes(b"\0" * max(0, stats.f_bavail * stats.f_frsize - leave))


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [str(BIN / "featurizer"), "run", "--master", "local[2]", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def console_lines(stderr: str) -> list[str]:
    """What a user sees on stderr, minus the progress bar and the JVM's start-up notice."""
    return [
        line
        for line in stderr.splitlines()
        if line.strip()
        and not line.startswith(
            ("featurize [", "WARNING: Using incubator", "INFO: Created TensorFlow Lite")
        )
    ]


def assert_one_line_failure(code: int, stderr: str, expected_code: int, *words: str) -> str:
    lines = console_lines(stderr)
    assert code == expected_code, stderr[-3000:]
    last = lines[-1]
    assert all(line.startswith("featurizer: ") for line in lines), lines
    assert "Traceback" not in stderr and "\tat " not in stderr and "py4j" not in stderr
    for word in words:
        assert word in last, last
    return last


def wait_staged(output: Path, process: subprocess.Popen, batches: int = 1) -> None:
    deadline = time.monotonic() + 300
    while len(list((output / "_work" / "featurized").glob("batch=*/_SUCCESS"))) < batches:
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no micro-batch staged in time"
        time.sleep(0.1)


def wait_gone(session: int, timeout: float = 60) -> list[bytes]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [process.cmdline for process in session_processes(session)]
        if not left:
            return []
        time.sleep(0.5)
    return left


def test_disk_full_on_the_output_is_one_line_naming_it(images, tiny_disk):
    fill(tiny_disk, leave=200_000)  # 200 images of features need ~1 MB
    output = tiny_disk / "out"
    process = start("--input", str(images), "--output", str(output), "--pca-k", "2")
    _, err = process.communicate(timeout=600)
    last = assert_one_line_failure(
        process.returncode, err, 1, "no space left on device", str(output), "full log: "
    )
    log = Path(last.rsplit("full log: ", 1)[1].rstrip(")"))
    assert "No space left on device" in log.read_text()  # the trace is kept there
    assert not (output / "_SUCCESS").exists()


def test_disk_full_in_sparks_local_dirs_names_the_full_folder(images, tiny_disk, tmp_path):
    fill(tiny_disk, leave=100_000)  # the 14 MB engine broadcast goes through local dirs
    process = start(
        "--input",
        str(images),
        "--output",
        str(tmp_path / "out"),
        "--pca-k",
        "2",
        "--conf",
        f"spark.local.dir={tiny_disk}",
    )
    _, err = process.communicate(timeout=600)
    assert_one_line_failure(
        process.returncode, err, 1, "no space left on device", f"({tiny_disk} is full)"
    )


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_cleanly_and_resume_finishes(images, tmp_path, signum, code):
    output = tmp_path / "out"
    process = start(
        "--input", str(images), "--output", str(output), "--pca-k", "2", "--files-per-batch", "40"
    )
    wait_staged(output, process)
    process.send_signal(signum)
    _, err = process.communicate(timeout=120)
    name = signal.Signals(signum).name
    last = assert_one_line_failure(
        process.returncode,
        err,
        code,
        f"stopped by {name}",
        f"rerun with --resume to continue into file://{output}",
    )
    assert "full log" not in last
    assert (output / "_work").is_dir() and not (output / "_SUCCESS").exists()
    assert not (output / "_lease.json").exists()
    assert wait_gone(process.pid) == [], "processes of the stopped run are still alive"
    resumed = subprocess.run(
        [
            str(BIN / "featurizer"),
            "run",
            "--input",
            str(images),
            "--output",
            str(output),
            "--pca-k",
            "2",
            "--files-per-batch",
            "40",
            "--master",
            "local[2]",
            "--resume",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    rows = pq.read_table(output / "features").to_pandas()
    assert len(rows) == 200 and rows["path"].is_unique


def test_an_unknown_master_is_a_configuration_error(tmp_path, images):
    result = subprocess.run(
        [
            str(BIN / "featurizer"),
            "run",
            "--input",
            str(images),
            "--output",
            str(tmp_path / "out"),
            "--master",
            "nonsense://x",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert_one_line_failure(
        result.returncode, result.stderr, 2, "--master must be", "'nonsense://x'"
    )
    assert not (tmp_path / "out").exists()


def test_more_components_than_images_are_clamped_with_a_warning(spark, tmp_path):
    folder = tmp_path / "in"
    sample_data.generate(folder, seed=2)
    few = sorted(folder.rglob("*.jpg"))[:5]
    for path in set(folder.rglob("*.jpg")) - set(few):
        path.unlink()
    manifest = pipeline.run(
        RunConfig(input=str(folder), output=str(tmp_path / "out"), pca_k=50), spark=spark
    )
    assert manifest["pca"]["k"] == 4 and manifest["pca"]["k_requested"] == 50
    assert manifest["pca"]["variance_explained"] <= 1.0
    assert manifest["warnings"] == [
        "--pca-k 50 asks for more components than 5 images can have (at most images - 1 "
        "carry variance): using k = 4"
    ]
    written = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert written["warnings"] == manifest["warnings"]
    assert {
        len(v) for v in pq.read_table(tmp_path / "out" / "features").column("pca").to_pylist()
    } == {4}
