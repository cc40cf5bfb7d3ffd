"""--pca-model: project with the PCA model of an earlier output instead of fitting one."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from featurizer import pipeline
from featurizer.config import RunConfig
from featurizer.errors import ConfigError


def _pca(output) -> dict[str, np.ndarray]:
    table = pq.read_table(output / "features").to_pandas()
    return {
        path: np.asarray(vector, np.float32) for path, vector in zip(table["path"], table["pca"])
    }


@pytest.fixture(scope="module")
def fitted(spark, sample_dir, tmp_path_factory):
    output = tmp_path_factory.mktemp("fit") / "run"
    pipeline.run(
        RunConfig(input=str(sample_dir), output=str(output), pca_k=8, no_report=True), spark=spark
    )
    return output


def test_the_same_images_get_exactly_the_same_projection(spark, sample_dir, fitted, tmp_path):
    model = f"file://{fitted}/pca_model"
    manifest = pipeline.run(
        RunConfig(
            input=str(sample_dir), output=str(tmp_path / "again"), pca_model=model, no_report=True
        ),
        spark=spark,
    )
    original, again = _pca(fitted), _pca(tmp_path / "again")
    assert original.keys() == again.keys() and len(original) == 100
    assert max(float(np.max(np.abs(original[p] - again[p]))) for p in original) == 0.0
    assert manifest["pca"]["k"] == 8 and manifest["pca"]["model_source"] == model
    written = json.loads((tmp_path / "again" / "manifest.json").read_text())
    assert written["pca"]["model_source"] == model
    assert (tmp_path / "again" / "pca_model" / "metadata").is_dir()  # the model goes along


def test_other_images_are_projected_on_the_fitted_components(spark, sample_dir, fitted, tmp_path):
    test_split = sample_dir / "Test"
    pipeline.run(
        RunConfig(
            input=str(test_split),
            output=str(tmp_path / "test"),
            pca_model=str(fitted / "pca_model"),
            no_report=True,
        ),
        spark=spark,
    )
    projected, original = _pca(tmp_path / "test"), _pca(fitted)
    assert projected and set(projected) <= set(original)  # Test is part of the sample
    assert all(np.array_equal(projected[p], original[p]) for p in projected)


def test_a_model_of_another_dimension_is_a_configuration_error(spark, sample_dir, tmp_path):
    from pyspark.ml.feature import PCA
    from pyspark.ml.linalg import Vectors

    rows = [(Vectors.dense(np.random.default_rng(i).normal(size=10).tolist()),) for i in range(20)]
    PCA(k=3, inputCol="v", outputCol="p").fit(spark.createDataFrame(rows, ["v"])).save(
        str(tmp_path / "ten-d")
    )
    with pytest.raises(ConfigError, match=r"projects 10-d vectors; these features are 1280-d"):
        pipeline.run(
            RunConfig(
                input=str(sample_dir),
                output=str(tmp_path / "out"),
                pca_model=str(tmp_path / "ten-d"),
            ),
            spark=spark,
        )
    with pytest.raises(ConfigError, match=r"cannot load the PCA model file://.*/nowhere"):
        pipeline.run(
            RunConfig(
                input=str(sample_dir),
                output=str(tmp_path / "out"),
                pca_model=str(tmp_path / "nowhere"),
            ),
            spark=spark,
        )
    assert not (tmp_path / "out").exists()  # refused before any work
    with pytest.raises(ConfigError, match="--pca-model brings its own k"):
        RunConfig(input="i", output="o", pca_model="m", pca_k=4)
