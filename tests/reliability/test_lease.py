"""One live run per output: the lease (`<output>/_lease.json`) fences concurrent runs, and a
dead run's lease is taken over by --resume (S3: tests/reliability/test_s3.py)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from featurizer import output, pipeline, sample_data, storage
from featurizer.config import RunConfig
from featurizer.errors import ConfigError

from processes import kill_session

BIN = Path(sys.executable).parent
HOLDER = "20261201T100000Z-abcdef"
BUSY = (
    rf"is being written by run {HOLDER} \(host [^,]+, pid \d+\) "
    rf"since 2026-12-01T10:00:00\+00:00"
)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    sample_data.generate(folder, seed=8)
    return folder


def write_lease(folder: Path, host: str, pid: int, age_s: float) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / output.LEASE).write_text(
        json.dumps(
            {
                "run_id": HOLDER,
                "host": host,
                "pid": pid,
                "started_at": "2026-12-01T10:00:00+00:00",
                "heartbeat": time.time() - age_s,
            }
        )
    )


def command(images: Path, out: Path, *extra: str) -> list[str]:
    return [
        str(BIN / "featurizer"),
        "run",
        "--input",
        str(images),
        "--output",
        str(out),
        "--pca-k",
        "2",
        "--master",
        "local[1]",
        "--no-report",
        *extra,
    ]


def test_a_live_lease_refuses_another_run_and_leaves_the_output_alone(spark, images, tmp_path):
    out = tmp_path / "out"
    holder = subprocess.Popen(["sleep", "300"])  # another live process on this host
    try:
        write_lease(out, socket.gethostname(), holder.pid, age_s=1)
        (out / "_work").mkdir()
        before = sorted(path.name for path in out.rglob("*"))
        with pytest.raises(ConfigError, match=BUSY):
            pipeline.run(RunConfig(input=str(images), output=str(out), overwrite=True), spark=spark)
        assert sorted(path.name for path in out.rglob("*")) == before
    finally:
        holder.kill()
        holder.wait()


def test_a_busy_local_output_is_refused_before_spark_starts(images, tmp_path):
    """A local output's lease is taken in Python while the JVM starts: a run that cannot
    have it never needs Java (here it has none)."""
    out = tmp_path / "out"
    holder = subprocess.Popen(["sleep", "300"])
    try:
        write_lease(out, socket.gethostname(), holder.pid, age_s=1)
        env = {**os.environ, "JAVA_HOME": str(tmp_path / "no-java")}
        refused = subprocess.run(
            command(images, out), capture_output=True, text=True, timeout=120, env=env
        )
    finally:
        holder.kill()
        holder.wait()
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert re.search(BUSY, refused.stderr.strip().splitlines()[-1]), refused.stderr[-2000:]


def test_the_python_lease_store_and_hadoops_see_the_same_files(spark, tmp_path):
    """LocalStorage (a local output's lease before Spark runs) and Storage (Hadoop's local
    file system, what the rest of the run uses) agree on what a folder holds."""
    hadoop, local = storage.Storage(spark), storage.LocalStorage()
    folder = storage.normalize(str(tmp_path / "out"))
    lease = storage.join(folder, output.LEASE)
    local.write_bytes(lease, b'{"by": "python"}')
    assert hadoop.read_bytes(lease) == local.read_bytes(lease) == b'{"by": "python"}'
    hadoop.write_bytes(lease, b'{"by": "hadoop"}')
    assert local.read_bytes(lease) == b'{"by": "hadoop"}'
    assert local.list_names(folder) == hadoop.list_names(folder) == [output.LEASE]
    local.delete(lease)
    assert not hadoop.exists(lease) and not local.exists(lease)
    assert local.list_names(folder) == hadoop.list_names(folder) == []
    local.write_bytes(lease, b"{}")
    local.delete(folder)
    assert not hadoop.exists(folder) and local.list_names(folder) == []


def test_resume_waits_for_a_lease_but_not_for_one_that_is_renewed(spark, images, tmp_path):
    out = tmp_path / "out"
    write_lease(out, "another-host", 1, age_s=0)
    stop = threading.Event()

    def renew() -> None:  # the holder is alive elsewhere: it keeps beating
        while not stop.wait(1):
            write_lease(out, "another-host", 1, age_s=0)

    renewer = threading.Thread(target=renew, daemon=True)
    renewer.start()
    started = time.monotonic()
    try:
        with pytest.raises(ConfigError, match=BUSY):
            pipeline.run(RunConfig(input=str(images), output=str(out), resume=True), spark=spark)
    finally:
        stop.set()
        renewer.join()
    assert time.monotonic() - started < output.LEASE_TTL_S  # refused once a renewal was seen


def test_a_killed_runs_lease_is_taken_over_by_resume(images, tmp_path):
    out = tmp_path / "out"
    run = subprocess.Popen(
        command(images, out, "--files-per-batch", "20"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while not list((out / "_work" / "featurized").glob("batch=*/_SUCCESS")):
        assert run.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)
    kill_session(run)  # no chance to release its lease
    holder = json.loads((out / output.LEASE).read_text())
    assert holder["pid"] == run.pid
    plain = subprocess.run(command(images, out), capture_output=True, text=True, timeout=300)
    assert plain.returncode == 2 and "interrupted run: pass --resume" in plain.stderr
    resumed = subprocess.run(
        command(images, out, "--resume"), capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert len(pq.read_table(out / "features")) == 100
    assert not (out / output.LEASE).exists()


def test_a_lease_whose_heartbeat_stopped_is_stale(spark, images, tmp_path):
    out = tmp_path / "out"
    write_lease(out, "another-host", 1, age_s=output.LEASE_TTL_S + 5)
    manifest = pipeline.run(
        RunConfig(input=str(images), output=str(out), pca_k=2, no_report=True), spark=spark
    )
    assert manifest["counts"]["featurized"] == 100 and not (out / output.LEASE).exists()


def test_two_runs_started_together_one_writes_the_other_is_refused(images, tmp_path):
    out = tmp_path / "out"
    runs = [
        subprocess.Popen(
            command(images, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    results = [(run.communicate(timeout=600)[1], run.returncode) for run in runs]
    assert sorted(code for _, code in results) == [0, 2], [err[-2000:] for err, _ in results]
    refused = next(err for err, code in results if code == 2)
    assert "is being written by run" in refused.strip().splitlines()[-1]
    assert len(pq.read_table(out / "features")) == 100 and (out / "_SUCCESS").exists()
    assert not (out / output.LEASE).exists()
