"""--incremental: a complete output takes in the input's new files, and only them."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from featurizer import pipeline, sample_data, sources
from featurizer.config import RunConfig
from featurizer.errors import ConfigError

BIN = Path(sys.executable).parent


def rows(output: Path, folder: str = "features") -> dict[str, dict]:
    return {row["path"]: row for row in pq.read_table(output / folder).to_pylist()}


def held_back(folder: Path, keep: int) -> list[Path]:
    """Move all but the first `keep` images (in path order) out of `folder`; they come back
    later as the input's new files."""
    images = sorted(folder.rglob("*.jpg"))
    later = folder.parent / f"{folder.name}-later"
    moved = []
    for path in images[keep:]:
        target = later / path.relative_to(folder)
        target.parent.mkdir(parents=True, exist_ok=True)
        moved.append(Path(shutil.move(path, target)))
    return moved


def bring_back(moved: list[Path], folder: Path, count: int) -> set[str]:
    later = folder.parent / f"{folder.name}-later"
    paths = set()
    for path in moved[:count]:
        target = folder / path.relative_to(later)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(path, target)
        paths.add(f"file:{target}")
    del moved[:count]
    return paths


def test_new_files_are_added_and_old_rows_stay_identical(spark, tmp_path):
    folder, out = tmp_path / "in", tmp_path / "out"
    sample_data.generate(folder, seed=8)
    later = held_back(folder, keep=60)
    run = {"input": str(folder), "output": str(out), "no_report": True}
    first = pipeline.run(RunConfig(pca_k=3, **run), spark=spark)
    assert (out / "_state" / "checkpoint").is_dir() and not (out / "_work").exists()
    before = rows(out)

    added = bring_back(later, folder, 25)
    logged: list[str] = []
    second = pipeline.run(RunConfig(incremental=True, **run), spark=spark, log=logged.append)
    after = rows(out)
    assert set(after) == set(before) | added and len(after) == 85
    for path, row in before.items():  # bit for bit, pca included
        assert after[path] == row
    assert second["counts"]["featurized"] == 85 and second["counts"]["added"] == 25
    assert second["pca"]["k"] == 3 and second["pca"]["model_source"] == f"file://{out}/pca_model"
    assert [run["featurized"] for run in second["runs"]] == [60, 25]
    assert second["runs"][0]["run_id"] == first["run_id"]
    assert (out / "_SUCCESS").is_file() and not (out / "_work").exists()
    assert not any("images were added" in line for line in logged)

    files = sorted(p.name for p in (out / "features").iterdir())
    logged.clear()
    third = pipeline.run(
        RunConfig(incremental=True, pca_k=3, **run), spark=spark, log=logged.append
    )
    assert f"nothing new under file://{folder}: file://{out} is unchanged" in logged
    assert third["run_id"] == second["run_id"]
    assert sorted(p.name for p in (out / "features").iterdir()) == files

    added = bring_back(later, folder, 5)
    broken = folder / "Training" / "Broken" / "cut.jpg"
    broken.parent.mkdir()
    broken.write_bytes(next(folder.rglob("*.jpg")).read_bytes()[:300])
    (broken.parent / "empty.jpg").write_bytes(b"")
    fourth = pipeline.run(
        RunConfig(incremental=True, max_error_rate=0.5, pca_k=4, **run), spark=spark
    )
    assert fourth["warnings"] == [
        "--pca-k 4 is not the output's k = 3: the new rows are projected with the output's "
        "model (--refit-pca to change k)"
    ]
    errors = rows(out, "errors")
    assert set(errors) == {f"file:{broken}", f"file:{broken.parent}/empty.jpg"}
    assert errors[f"file:{broken.parent}/empty.jpg"]["error"] == "empty file (0 bytes)"
    assert (fourth["counts"]["featurized"], fourth["counts"]["failed"]) == (90, 2)
    assert set(rows(out)) == set(after) | added

    refit = pipeline.run(RunConfig(incremental=True, refit_pca=True, pca_k=5, **run), spark=spark)
    final = rows(out)
    assert len(final) == 90 and {len(row["pca"]) for row in final.values()} == {5}
    assert all(final[path]["features"] == row["features"] for path, row in after.items())
    assert refit["pca"]["model_source"] is None and len(refit["runs"]) == 4
    assert (out / "_state" / "checkpoint").is_dir()
    # The refitted model is the one a fresh run over the same images fits.
    fresh = pipeline.run(
        RunConfig(
            input=str(folder),
            output=str(tmp_path / "fresh"),
            pca_k=5,
            max_error_rate=0.5,
            no_report=True,
        ),
        spark=spark,
    )
    assert fresh["pca"]["explained_variance"] == pytest.approx(
        refit["pca"]["explained_variance"], rel=1e-6
    )
    again = rows(tmp_path / "fresh")
    assert (
        max(float(np.max(np.abs(np.subtract(again[p]["pca"], final[p]["pca"])))) for p in final)
        < 1e-4
    )


def test_what_an_incremental_run_refuses(spark, tmp_path, monkeypatch):
    folder, out = tmp_path / "in", tmp_path / "out"
    sample_data.generate(folder, seed=9)
    run = {"input": str(folder), "output": str(out), "no_report": True}
    pipeline.run(RunConfig(limit=10, pca_k=2, **run), spark=spark)
    assert not (out / "_state").exists()
    with pytest.raises(
        ConfigError,
        match=r"keeps no record of the files it holds \(it was "
        r"written with --limit or --sample-fraction",
    ):
        pipeline.run(RunConfig(incremental=True, **run), spark=spark)

    pipeline.run(RunConfig(pca_k=2, overwrite=True, **run), spark=spark)
    # Made over a queue of its files: a run the workers cannot read for (the JVM would, over
    # the input folder, against a checkpoint that names queue files) would take every file.
    with monkeypatch.context() as patched:
        patched.setattr(sources.FileSource, "reader", lambda self, spark: None)
        with pytest.raises(ConfigError, match=r"was featurized by Python workers reading its"):
            pipeline.run(RunConfig(incremental=True, **run), spark=spark)
    # How a run stages its vectors and what its stream read are not settings of the output:
    # one kept by an older featurizer (no "staged_vectors", its stream over the input
    # folder) still takes the same settings' runs.
    kept = out / "_state" / "run.json"
    record = json.loads(kept.read_text())
    assert record.pop("staged_vectors") == "float32 bytes"
    assert record.pop("stream") == "queue"
    kept.write_text(json.dumps(record))
    assert (
        pipeline.run(RunConfig(incremental=True, **run), spark=spark)["counts"]["featurized"] == 100
    )
    with pytest.raises(
        ConfigError,
        match=r"other settings \(engine differ\); --incremental "
        r"needs the same --input, --weights",
    ):
        pipeline.run(RunConfig(incremental=True, engine="keras", **run), spark=spark)
    with pytest.raises(
        ConfigError,
        match="--incremental adds every new file with the output's own settings: leave out --limit",
    ):
        RunConfig(incremental=True, limit=5, **run)
    with pytest.raises(ConfigError, match="--refit-pca goes with --incremental"):
        RunConfig(refit_pca=True, **run)


def test_incremental_into_an_empty_output_is_a_full_run(spark, tmp_path):
    folder = tmp_path / "in"
    sample_data.generate(folder, seed=10)
    manifest = pipeline.run(
        RunConfig(
            input=str(folder),
            output=str(tmp_path / "out"),
            incremental=True,
            pca_k=2,
            no_report=True,
        ),
        spark=spark,
    )
    assert manifest["counts"]["featurized"] == 100 and len(manifest["runs"]) == 1
    assert (tmp_path / "out" / "_state" / "checkpoint").is_dir()


def test_a_cut_short_incremental_run_leaves_the_output_and_resume_finishes(spark, tmp_path):
    folder, out = tmp_path / "in", tmp_path / "out"
    sample_data.generate(folder, seed=11, scale=2)  # 200 images
    later = held_back(folder, keep=40)
    pipeline.run(
        RunConfig(input=str(folder), output=str(out), pca_k=2, no_report=True), spark=spark
    )
    before = rows(out)
    added = bring_back(later, folder, 160)
    args = [
        "--input",
        str(folder),
        "--output",
        str(out),
        "--master",
        "local[2]",
        "--files-per-batch",
        "20",
        "--no-report",
    ]
    process = subprocess.Popen(
        [str(BIN / "featurizer"), "run", "--incremental", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while not list((out / "_work" / "featurized").glob("batch=*/_SUCCESS")):
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no micro-batch staged in time"
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143, err[-3000:]
    assert (out / "_SUCCESS").is_file() and rows(out) == before  # still complete, as it was
    assert (out / "_work").is_dir()
    refused = subprocess.run(
        [str(BIN / "featurizer"), "run", "--incremental", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert (
        refused.returncode == 2
        and "holds an interrupted run: pass --resume to finish it first"
        in refused.stderr.splitlines()[-1]
    )
    resumed = subprocess.run(
        [str(BIN / "featurizer"), "run", "--resume", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = rows(out)
    assert set(after) == set(before) | added and len(after) == 200
    assert all(after[path] == row for path, row in before.items())
    assert not (out / "_work").exists()
