"""Memory stays bounded on a bigger run: 20,000 images, the default `featurizer run` (with
its report), every process's own peak RSS (VmHWM) read from /proc while it runs."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from featurizer import sample_data

from processes import is_python_worker, session_processes

BIN = Path(sys.executable).parent
IMAGES = 20_000
# Features of 20k images are 100 MB as float32 and ~1 GB as Python lists: a driver that
# collected them would cross the pipeline bound. The report afterwards reads the vectors of
# at most 20,000 sampled rows and trains its probe on at most 10,000: bounded, whatever N.
PIPELINE_DRIVER_PYTHON_MB = 600
DRIVER_PYTHON_WITH_REPORT_MB = 1500
PYTHON_WORKER_MB = 600


def role_of(cmdline: bytes) -> str:
    return (
        "jvm"
        if b"java" in cmdline.split(b"\0")[0]
        else "python_worker"
        if is_python_worker(cmdline)
        else "driver_python"
        if b"featurizer" in cmdline
        else "other"
    )


def high_water_marks(session: int) -> dict[int, tuple[str, float]]:
    """Each live process of a session: (role, VmHWM in MB). VmHWM is the kernel's own peak
    RSS of the process so far, so no spike between two looks is missed."""
    marks = {}
    for process in session_processes(session):
        if not process.cmdline:  # a zombie: no memory left to read, and no name
            continue
        hwm = next(
            (
                int(line.split()[1]) / 1024
                for line in process.status.splitlines()
                if line.startswith("VmHWM:")
            ),
            0.0,
        )
        marks[process.pid] = (role_of(process.cmdline), hwm)
    return marks


@pytest.mark.slow
def test_20k_images_keep_memory_bounded(tmp_path):
    folder = tmp_path / "in"
    sample_data.generate(folder, seed=20, scale=IMAGES // 100)
    process = subprocess.Popen(
        [
            str(BIN / "featurizer"),
            "run",
            "--input",
            str(folder),
            "--output",
            str(tmp_path / "out"),
            "--pca-k",
            "32",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    marks: dict[int, tuple[str, float]] = {}  # pid -> its last read (role, VmHWM)

    def sample() -> None:
        while process.poll() is None:  # a process's mark only grows...
            for pid, (role, hwm) in high_water_marks(process.pid).items():
                seen = marks.get(pid)
                # ...until it execs: a forked child is the test process until it becomes
                # the driver (a new address space, a new mark, another role).
                marks[pid] = (role, max(hwm, seen[1])) if seen and seen[0] == role else (role, hwm)
            time.sleep(0.2)

    sampler = threading.Thread(target=sample)
    sampler.start()
    log, _ = process.communicate(timeout=3600)
    sampler.join()
    peaks: dict[str, float] = {}
    for role, hwm in marks.values():
        peaks[role] = max(peaks.get(role, 0.0), hwm)
    assert process.returncode == 0, log[-3000:]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["counts"]["featurized"] == IMAGES
    print(f"peak RSS (VmHWM) MB: {peaks}; manifest: {manifest['memory_mb']}")
    assert manifest["memory_mb"]["driver_python_peak"] < PIPELINE_DRIVER_PYTHON_MB
    assert peaks["driver_python"] < DRIVER_PYTHON_WITH_REPORT_MB, peaks
    assert peaks["python_worker"] < PYTHON_WORKER_MB, peaks
    assert manifest["memory_mb"]["python_worker_peak"] < PYTHON_WORKER_MB
    assert (tmp_path / "out" / "report.html").exists()
