"""The whole job on real files, real weights and a real local Spark session."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from featurizer import images, pipeline, sample_data, weights
from featurizer import output as output_module
from featurizer.config import RunConfig
from featurizer.errors import ConfigError, FeaturizerError

CORRUPT = "Banana/corrupt.jpg"


@pytest.fixture(scope="module")
def dataset(sample_dir: Path, tmp_path_factory) -> Path:
    """The sample plus a corrupt file and a name with spaces and quotes."""
    folder = tmp_path_factory.mktemp("data") / "in"
    shutil.copytree(sample_dir, folder)
    (folder / "Training" / CORRUPT).write_bytes(b"\xff\xd8\xff\xe0 truncated")
    shutil.copy(
        folder / "Test" / "Kiwi" / "0_100.jpg", folder / "Test" / "Kiwi" / "it's a kiwi.JPG"
    )
    (folder / "Test" / "Kiwi" / "notes.txt").write_text("not an image")
    return folder


@pytest.fixture(scope="module")
def result(spark, dataset: Path, tmp_path_factory) -> tuple[Path, dict]:
    output = tmp_path_factory.mktemp("out") / "run"
    manifest = pipeline.run(RunConfig(input=str(dataset), output=str(output)), spark=spark)
    return output, manifest


def read_features(output: Path):
    return pq.read_table(output / "features").to_pandas()


def test_outputs_are_complete(result):
    output, manifest = result
    for name in (
        "features",
        "errors",
        "pca_model",
        "manifest.json",
        "explained_variance.png",
        "_SUCCESS",
    ):
        assert (output / name).exists(), name
    assert not (output / "_work").exists()
    assert (output / "explained_variance.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((output / "manifest.json").read_text()) == manifest


def test_row_counts_and_labels_with_spaces(result):
    output, manifest = result
    frame = read_features(output)
    assert len(frame) == 101  # 100 sample + 1 renamed copy
    assert frame["path"].is_unique
    assert set(frame["label"]) == set(sample_data.CLASSES)
    assert any(path.endswith("/it's a kiwi.JPG") for path in frame["path"])
    assert manifest["counts"] == {
        "found": 102,
        "selected": 102,
        "featurized": 101,
        "failed": 1,
        "resumed": 0,
        "processed_this_run": 102,
        "aliases_skipped": 0,
    }
    assert manifest["classes"] == 5


def test_features_are_1280_float32_and_pca_has_k_values(result):
    output, manifest = result
    frame = read_features(output)
    assert {len(v) for v in frame["features"]} == {1280}
    assert {len(v) for v in frame["pca"]} == {manifest["pca"]["k"]}
    schema = pq.read_schema(next((output / "features").glob("*.parquet")))
    assert str(schema.field("features").type) == "list<element: float>"


def test_corrupt_file_is_recorded_in_errors(result):
    output, _ = result
    errors = pq.read_table(output / "errors").to_pandas()
    assert len(errors) == 1
    assert errors["path"][0].endswith(CORRUPT)
    assert errors["error"][0] == "OSError: Truncated File Read"


def test_features_equal_bare_keras(result, no_top_weights):
    output, _ = result
    frame = read_features(output).sort_values("path").head(24)
    files = [Path(p.removeprefix("file:")).read_bytes() for p in frame["path"]]
    batch, errors = images.decode_many(files)
    assert not any(errors)
    model = weights.build_model(no_top_weights)
    expected = model(images.preprocess(batch), training=False).numpy()
    got = np.stack(frame["features"].to_numpy())
    cosine = np.sum(expected * got, 1) / (
        np.linalg.norm(expected, axis=1) * np.linalg.norm(got, axis=1)
    )
    assert cosine.min() >= 0.9999, cosine.min()


def test_pca_variance_matches_numpy(result):
    output, manifest = result
    features = np.stack(read_features(output)["features"].to_numpy()).astype(np.float64)
    eigenvalues = np.linalg.eigvalsh(np.cov(features, rowvar=False))[::-1]
    ratios = eigenvalues / eigenvalues.sum()
    k = manifest["pca"]["k"]
    assert np.allclose(manifest["pca"]["explained_variance"][:k], ratios[:k], atol=1e-6)
    assert manifest["pca"]["variance_explained"] >= 0.95
    assert np.sum(ratios[: k - 1]) < 0.95  # k is the smallest such k
    # A fresh run's covariance is the featurizing tasks' own sums (no second pass).
    assert manifest["pca"]["covariance_summed"] == "featurizing"


def test_pca_projections_are_numpys_leading_eigenvectors(result):
    # Computed here, not with the job's code: Spark ML PCA's components are the leading
    # eigenvectors of the sample covariance (the features centered), the projection is of the
    # uncentered features, and the job turns each component so that its largest-|x| loading
    # is positive.
    output, _ = result
    frame = read_features(output)
    features = np.stack(frame["features"].to_numpy()).astype(np.float64)
    pca = np.stack(frame["pca"].to_numpy()).astype(np.float64)
    centered = features - features.mean(axis=0)
    _, singular, rows = np.linalg.svd(centered, full_matrices=False)
    leading = rows[:5].T  # columns: the 5 directions of largest variance, largest first
    assert singular[4] > singular[5] * 1.01  # the 5th is not a tie with the 6th
    for column in range(5):
        largest = np.argmax(np.abs(leading[:, column]))
        if leading[largest, column] < 0:
            leading[:, column] = -leading[:, column]
    expected = features @ leading
    assert np.allclose(pca[:, :5], expected, rtol=1e-3, atol=1e-3 * np.abs(expected).max())


def test_pca_model_reloads_and_reproduces_pca(result, spark):
    from pyspark.ml.feature import PCAModel
    from pyspark.ml.functions import array_to_vector, vector_to_array

    output, manifest = result
    model = PCAModel.load(str(output / "pca_model"))
    assert model.pc.numCols == manifest["pca"]["k"]
    frame = spark.read.parquet(str(output / "features"))
    projected = (
        model.setInputCol("v")
        .setOutputCol("p")
        .transform(frame.withColumn("v", array_to_vector("features")))
    )
    rows = projected.select("pca", vector_to_array("p").alias("again")).collect()
    for row in rows:
        assert np.allclose(row["pca"], row["again"], rtol=1e-4, atol=1e-4)


def test_manifest_records_what_ran(result):
    _, manifest = result
    assert manifest["weights"]["name"] == weights.NO_TOP_FILE
    assert len(manifest["weights"]["sha256"]) == 64
    assert {"spark", "python", "tensorflow-cpu", "numpy"} <= set(manifest["versions"])
    assert {"discover", "featurize", "reduce", "write", "total"} <= set(manifest["timings_s"])
    assert manifest["throughput"]["featurize_images_per_s"] > 0
    assert manifest["memory_mb"]["python_worker_peak"] > 100


def test_existing_output_is_refused_without_overwrite(result, spark, dataset):
    output, _ = result
    before = sorted(p.name for p in output.iterdir())
    with pytest.raises(ConfigError, match="--overwrite"):
        pipeline.run(RunConfig(input=str(dataset), output=str(output)), spark=spark)
    assert sorted(p.name for p in output.iterdir()) == before


def test_overwrite_replaces_the_output(spark, dataset, tmp_path):
    output = tmp_path / "out"
    output.mkdir()
    (output / "stale.txt").write_text("old")
    manifest = pipeline.run(
        RunConfig(input=str(dataset), output=str(output), overwrite=True, limit=10, pca_k=3),
        spark=spark,
    )
    assert manifest["counts"]["selected"] == 10
    assert len(read_features(output)) + len(pq.read_table(output / "errors")) == 10
    assert {len(v) for v in read_features(output)["pca"]} == {3}
    assert (output / "_SUCCESS").exists()
    assert not (output / "stale.txt").exists()  # replaced, not merged into


def test_limit_takes_the_oldest_files_across_micro_batches(spark, sample_dir, tmp_path):
    # Modification times run against path order, and 7 is no multiple of the 3 files per
    # micro-batch: the last batch must pick its oldest file, not its first by path.
    folder = tmp_path / "in" / "Kiwi"
    folder.mkdir(parents=True)
    sources = sorted(sample_dir.rglob("*.jpg"))[:12]
    for index, source in enumerate(sources):
        target = folder / f"{index:02d}.jpg"
        shutil.copy(source, target)
        os.utime(target, (1_600_000_000 - index * 60, 1_600_000_000 - index * 60))
    output = tmp_path / "out"
    manifest = pipeline.run(
        RunConfig(
            input=str(tmp_path / "in"), output=str(output), limit=7, files_per_batch=3, pca_k=2
        ),
        spark=spark,
    )
    names = sorted(Path(path).name for path in read_features(output)["path"])
    assert names == [f"{index:02d}.jpg" for index in range(5, 12)]  # the 7 oldest
    assert manifest["counts"]["selected"] == 7


@pytest.mark.parametrize(("files_per_batch", "micro_batches"), [(None, 3), (45, 3), (60, 2)])
def test_a_micro_batch_takes_files_per_core_unless_told(
    spark, sample_dir, tmp_path, monkeypatch, files_per_batch, micro_batches
):
    # 100 images; by default a micro-batch is FILES_PER_CORE files per core of the session
    # (2 here): 20 -> 40 files, three micro-batches, as many as with --files-per-batch 45.
    monkeypatch.setattr("featurizer.config.FILES_PER_CORE", 20)
    output = tmp_path / "out"
    manifest = pipeline.run(
        RunConfig(
            input=str(sample_dir), output=str(output), pca_k=2, files_per_batch=files_per_batch
        ),
        spark=spark,
    )
    assert manifest["spark"]["files_per_batch"] == (files_per_batch or 40)
    commits = (output / output_module.STATE / "checkpoint" / "commits").iterdir()
    done = sorted(path.name for path in commits if not path.name.startswith("."))  # not .crc
    assert done == [str(batch) for batch in range(micro_batches)]
    assert manifest["counts"]["featurized"] == len(read_features(output)) == 100


def test_empty_input_is_a_clear_error_and_writes_nothing(spark, tmp_path):
    (tmp_path / "in" / "Kiwi").mkdir(parents=True)
    (tmp_path / "in" / "Kiwi" / "readme.txt").write_text("no images here")
    with pytest.raises(ConfigError, match="no images"):
        pipeline.run(
            RunConfig(input=str(tmp_path / "in"), output=str(tmp_path / "out")), spark=spark
        )
    assert not (tmp_path / "out").exists()


def test_missing_input_is_a_clear_error(spark, tmp_path):
    with pytest.raises(ConfigError, match="cannot read input"):
        pipeline.run(
            RunConfig(input=str(tmp_path / "nope"), output=str(tmp_path / "out")), spark=spark
        )


def test_output_inside_input_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="inside the input"):
        pipeline.run(RunConfig(input=str(tmp_path), output=str(tmp_path / "out")))


def test_too_many_errors_fail_after_writing_errors(spark, sample_dir, tmp_path):
    folder = tmp_path / "in" / "Kiwi"
    folder.mkdir(parents=True)
    for index in range(4):
        shutil.copy(next(sample_dir.rglob("*.jpg")), folder / f"good{index}.jpg")
        (folder / f"bad{index}.jpg").write_bytes(b"")
    output = tmp_path / "out"
    with pytest.raises(FeaturizerError, match="max-error-rate"):
        pipeline.run(RunConfig(input=str(tmp_path / "in"), output=str(output)), spark=spark)
    assert len(pq.read_table(output / "errors")) == 4
    assert not (output / "_SUCCESS").exists()
    assert json.loads((output / "manifest.json").read_text())["status"] == "failed"


def test_sample_fraction_featurizes_the_same_part_of_the_input_every_time(
    spark, sample_dir, tmp_path
):
    found = {str(path) for path in sample_dir.rglob("*.jpg")}
    picked = []
    for name in ("a", "b"):
        manifest = pipeline.run(
            RunConfig(
                input=str(sample_dir),
                output=str(tmp_path / name),
                sample_fraction=0.5,
                pca_k=2,
                no_report=True,
            ),
            spark=spark,
        )
        paths = {path.removeprefix("file:") for path in read_features(tmp_path / name)["path"]}
        assert manifest["counts"]["found"] == len(found) == 100
        assert manifest["counts"]["selected"] == manifest["counts"]["featurized"] == len(paths)
        assert 30 <= len(paths) <= 70  # half of 100, give or take 4 standard deviations
        assert paths <= found
        picked.append(paths)
    assert picked[0] == picked[1]  # pseudo-random, but the same files on a rerun


def test_a_local_listing_of_many_folders_runs_no_spark_job(spark, fruits360):
    """131 class folders: above Spark's threshold of 32 it would list them with a job of one
    task per folder; a local session lists in place (session.local_defaults)."""
    from featurizer import local_input, sources, storage

    training = fruits360 / "Training"
    uri = storage.normalize(str(training))
    config = RunConfig(input=uri, output="unused")
    source = sources.open_source(config, uri, storage.Storage(spark), local_input.scan(training))
    tracker, group = spark.sparkContext.statusTracker(), "listing-under-test"
    spark.sparkContext.setJobGroup(group, "the listing")
    try:
        listing = source.listing(spark)
    finally:
        spark.sparkContext.setLocalProperty("spark.jobGroup.id", None)
    assert listing.found == len(list(training.rglob("*.jpg"))) > 5000
    assert sum(1 for folder in training.iterdir() if folder.is_dir()) > 32
    assert list(tracker.getJobIdsForGroup(group)) == []


def test_read_tasks_hold_equal_counts_of_files_whatever_their_sizes(spark, tmp_path):
    """Work is per image, not per byte: a micro-batch's files of very different sizes are
    split into two tasks per core of equal counts (split by bytes, the big files' task had
    fewer of them and its core sat idle at the end of every micro-batch)."""
    from pyspark.sql import functions as F

    folder = tmp_path / "in" / "Mixed"
    folder.mkdir(parents=True)
    for i in range(200):  # 100 files of 1 KB, 100 of 64 KB
        (folder / f"{i:03d}.jpg").write_bytes(os.urandom(1 << 10 if i % 2 else 1 << 16))
    with pipeline._read_tasks(spark):
        files = spark.read.format("binaryFile").load(str(folder)).select("path", "length")
        counts = files.groupBy(F.spark_partition_id()).count().collect()
    tasks = sorted(row["count"] for row in counts)
    assert len(tasks) == pipeline.TASKS_PER_CORE * spark.sparkContext.defaultParallelism
    assert tasks[-1] - tasks[0] <= 2, tasks  # by bytes (8 KB a file): 28 against 16
