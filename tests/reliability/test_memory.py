"""Memory stays bounded on a bigger run: 20,000 images, the default `featurizer run` (with
its report), every process of the run sampled from /proc while it runs."""

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


def rss_by_role(session: int) -> dict[str, float]:
    """Current RSS (MB) of the largest process of each role in a process session."""
    peaks: dict[str, float] = {}
    for process in session_processes(session):
        cmdline, status = process.cmdline, process.status
        rss = next((int(line.split()[1]) / 1024 for line in status.splitlines()
                    if line.startswith("VmRSS:")), 0.0)
        role = ("jvm" if b"java" in cmdline.split(b"\0")[0] else
                "python_worker" if is_python_worker(cmdline) else
                "driver_python" if b"featurizer" in cmdline else "other")
        peaks[role] = max(peaks.get(role, 0.0), rss)
    return peaks


@pytest.mark.slow
def test_20k_images_keep_memory_bounded(tmp_path):
    folder = tmp_path / "in"
    sample_data.generate(folder, seed=20, scale=IMAGES // 100)
    process = subprocess.Popen([str(BIN / "featurizer"), "run", "--input", str(folder),
                                "--output", str(tmp_path / "out"), "--pca-k", "32"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    peaks: dict[str, float] = {}

    def sample() -> None:
        while process.poll() is None:
            for role, rss in rss_by_role(process.pid).items():
                peaks[role] = max(peaks.get(role, 0.0), rss)
            time.sleep(0.5)

    sampler = threading.Thread(target=sample)
    sampler.start()
    log, _ = process.communicate(timeout=3600)
    sampler.join()
    assert process.returncode == 0, log[-3000:]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["counts"]["featurized"] == IMAGES
    print(f"peak RSS MB: {peaks}; manifest: {manifest['memory_mb']}")
    assert manifest["memory_mb"]["driver_python_peak"] < PIPELINE_DRIVER_PYTHON_MB
    assert peaks["driver_python"] < DRIVER_PYTHON_WITH_REPORT_MB, peaks
    assert peaks["python_worker"] < PYTHON_WORKER_MB, peaks
    assert manifest["memory_mb"]["python_worker_peak"] < PYTHON_WORKER_MB
    assert (tmp_path / "out" / "report.html").exists()
