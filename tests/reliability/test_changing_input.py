"""An input that changes under a run: files deleted at every stage, files added, on a local
disk. Nothing is lost silently and the run completes (S3: tests/reliability/test_s3.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from featurizer import pipeline, reduce, sample_data
from featurizer.config import RunConfig

BIN = Path(sys.executable).parent
DISAPPEARED = "file disappeared during the run"


@pytest.fixture
def images(tmp_path) -> Path:
    folder = tmp_path / "in"
    assert sample_data.generate(folder, seed=3) == 100
    return folder


def _outcome(output: Path) -> tuple[dict, dict[str, str], dict[str, str]]:
    manifest = json.loads((output / "manifest.json").read_text())
    features = pq.read_table(output / "features").to_pandas()
    errors = pq.read_table(output / "errors").to_pandas()
    return (
        manifest,
        dict(zip(features["path"], features["label"])),
        dict(zip(errors["path"], errors["error"])),
    )


def _paths(folder: Path) -> list[str]:
    return sorted(f"file:{path}" for path in folder.rglob("*.jpg"))


def test_files_deleted_between_listing_and_streaming(spark, images, tmp_path, monkeypatch):
    gone = _paths(images)[::20]  # 5 files
    listed = pipeline.discover

    def discover_then_delete(*args):
        files = listed(*args)
        for path in gone:
            Path(path.removeprefix("file:")).unlink()
        return files

    monkeypatch.setattr(pipeline, "discover", discover_then_delete)
    pipeline.run(
        RunConfig(input=str(images), output=str(tmp_path / "out"), pca_k=2, max_error_rate=0.1),
        spark=spark,
    )
    manifest, good, bad = _outcome(tmp_path / "out")
    assert bad == {path: DISAPPEARED for path in gone}
    assert len(good) == 95 and not set(good) & set(gone)
    assert manifest["counts"]["found"] == 100 and manifest["counts"]["failed"] == 5


def test_files_deleted_between_micro_batches_are_recorded(spark, images, tmp_path, monkeypatch):
    """Deleted after the stream listed them, before their micro-batch reads them."""
    gone: list[str] = []
    write = pipeline.BatchWriter.__call__

    def first_batch_deletes_later_files(self, files, batch_id):
        if batch_id == 0:
            mine = {row.path for row in files.select("path").collect()}
            gone.extend([path for path in _paths(images) if path not in mine][:5])
            for path in gone:
                Path(path.removeprefix("file:")).unlink()
        return write(self, files, batch_id)

    monkeypatch.setattr(pipeline.BatchWriter, "__call__", first_batch_deletes_later_files)
    pipeline.run(
        RunConfig(
            input=str(images),
            output=str(tmp_path / "out"),
            pca_k=2,
            files_per_batch=25,
            max_error_rate=0.1,
        ),
        spark=spark,
    )
    manifest, good, bad = _outcome(tmp_path / "out")
    assert len(gone) == 5 and bad == {path: DISAPPEARED for path in gone}
    assert len(good) == 95
    assert manifest["counts"]["found"] == 100


def test_a_listed_file_that_staged_no_row_is_recorded(spark, images, tmp_path, monkeypatch):
    """A fresh run over a queue checks its staged rows by count (no join): if a listed file
    has no row (here dropped from its micro-batch), the count differs and it is recorded."""
    lost = _paths(images)[7]
    write = pipeline.BatchWriter.__call__

    def drop_one(self, files, batch_id):
        return write(self, files.where(files.path != lost), batch_id)

    monkeypatch.setattr(pipeline.BatchWriter, "__call__", drop_one)
    pipeline.run(
        RunConfig(input=str(images), output=str(tmp_path / "out"), pca_k=2, max_error_rate=0.1),
        spark=spark,
    )
    manifest, good, bad = _outcome(tmp_path / "out")
    assert bad == {lost: "file was not read"} and len(good) == 99
    assert manifest["counts"]["found"] == 100 and manifest["counts"]["failed"] == 1


def test_files_deleted_after_featurizing_change_nothing(spark, images, tmp_path, monkeypatch):
    fit = reduce.fit_pca

    def delete_then_fit(*args, **kwargs):
        for path in _paths(images)[:10]:
            Path(path.removeprefix("file:")).unlink()
        return fit(*args, **kwargs)

    monkeypatch.setattr(reduce, "fit_pca", delete_then_fit)
    pipeline.run(RunConfig(input=str(images), output=str(tmp_path / "out"), pca_k=2), spark=spark)
    manifest, good, bad = _outcome(tmp_path / "out")
    assert len(good) == 100 and not bad and manifest["counts"]["failed"] == 0


def test_files_added_during_the_run(spark, images, tmp_path, monkeypatch):
    """The workers read what the listing found, from a queue of its paths: files added after
    it, before or during featurizing, are not part of this run; the next --incremental run
    adds them."""
    listed, write = pipeline.discover, pipeline.BatchWriter.__call__
    early = images / "Late Arrivals" / "early.jpg"
    late = images / "Late Arrivals" / "late.jpg"
    source = Path(_paths(images)[0].removeprefix("file:"))

    def discover_then_add(*args):
        files = listed(*args)
        early.parent.mkdir(exist_ok=True)
        early.write_bytes(source.read_bytes())
        return files

    def first_batch_adds(self, files, batch_id):
        if batch_id == 0:
            late.write_bytes(source.read_bytes())
        return write(self, files, batch_id)

    monkeypatch.setattr(pipeline, "discover", discover_then_add)
    monkeypatch.setattr(pipeline.BatchWriter, "__call__", first_batch_adds)
    config = RunConfig(input=str(images), output=str(tmp_path / "out"), pca_k=2, files_per_batch=50)
    pipeline.run(config, spark=spark)
    manifest, good, bad = _outcome(tmp_path / "out")
    assert f"file:{early}" not in good and f"file:{late}" not in good and not bad
    assert manifest["counts"]["found"] == manifest["counts"]["featurized"] == 100
    assert not manifest["warnings"]

    monkeypatch.undo()
    pipeline.run(replace(config, incremental=True), spark=spark)
    manifest, good, bad = _outcome(tmp_path / "out")
    assert {f"file:{early}", f"file:{late}"} <= set(good) and not bad
    assert manifest["counts"]["found"] == manifest["counts"]["featurized"] == 102
    assert manifest["counts"]["added"] == 2


def test_deleting_files_while_the_command_runs(images, tmp_path):
    """The reported case, end to end: 5 files deleted a few seconds into a run."""
    output = tmp_path / "out"
    process = subprocess.Popen(
        [
            str(BIN / "featurizer"),
            "run",
            "--input",
            str(images),
            "--output",
            str(output),
            "--files-per-batch",
            "20",
            "--pca-k",
            "2",
            "--max-error-rate",
            "0.1",
            "--master",
            "local[2]",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    while not list((output / "_work" / "featurized").glob("batch=*/_SUCCESS")):
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.1)
    staged = {
        row
        for part in (output / "_work" / "featurized").glob("batch=*")
        for row in pq.read_table(part).column("path").to_pylist()
    }
    # The stream takes files oldest first: the 5 newest are in the last micro-batch.
    by_age = sorted(images.rglob("*.jpg"), key=lambda path: path.stat().st_mtime_ns)
    gone = [f"file:{path}" for path in by_age if f"file:{path}" not in staged][-5:]
    for path in gone:
        Path(path.removeprefix("file:")).unlink()
    _, err = process.communicate(timeout=600)
    assert process.returncode == 0, err[-3000:]
    manifest, good, bad = _outcome(output)
    assert bad == {path: DISAPPEARED for path in gone}
    assert len(good) == 95 and manifest["counts"]["found"] == 100
