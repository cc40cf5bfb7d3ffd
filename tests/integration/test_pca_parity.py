"""The job's PCA (covariance summed by the Python workers, reduce.py) is Spark ML's PCA."""

from __future__ import annotations

import numpy as np
import pytest

from featurizer import reduce
from featurizer.errors import FeaturizerError

DIM = 1280


@pytest.fixture(scope="module")
def vectors(spark):
    """600 correlated 1280-d float32 rows (a few strong directions plus noise, an offset
    mean as real features have), spread over several partitions."""
    from pyspark.ml.functions import array_to_vector

    rng = np.random.default_rng(3)
    rows = (
        rng.normal(size=(600, 12)) @ rng.normal(size=(12, DIM)) * 3
        + rng.normal(size=(600, DIM)) * 0.1
        + 2.0
    ).astype(np.float32)
    frame = spark.createDataFrame([(row.tolist(),) for row in rows], "features array<float>")
    return (
        frame.repartition(5).select("features", array_to_vector("features").alias("vector")).cache()
    )


def test_explained_variance_and_components_are_spark_ml_pcas(vectors):
    from pyspark.ml.feature import PCA

    ours = reduce.fit_pca(vectors, "vector", "pca_vector", DIM, 20, 0.95, rows=600)
    spark_ml = PCA(k=DIM, inputCol="vector", outputCol="p").fit(vectors)

    expected = spark_ml.explainedVariance.toArray()
    assert np.allclose(ours.explained, expected, rtol=1e-9, atol=1e-15)
    leading = spark_ml.pc.toArray()[:, :20]
    # Each component may come out with either sign; the job makes the largest loading positive.
    largest = np.argmax(np.abs(leading), axis=0)
    expected_components = leading * np.sign(leading[largest, np.arange(20)])
    assert np.allclose(ours.model.pc.toArray(), expected_components, atol=1e-9)


def test_the_model_projects_like_spark_ml_pca_k(vectors):
    from pyspark.ml.feature import PCA

    ours = reduce.fit_pca(vectors, "vector", "pca_vector", DIM, 5, 0.95, rows=600).model
    spark_ml = PCA(k=5, inputCol="vector", outputCol="pca_vector").fit(vectors)
    mine = np.array([r.pca_vector.toArray() for r in ours.transform(vectors).collect()])
    theirs = np.array([r.pca_vector.toArray() for r in spark_ml.transform(vectors).collect()])
    assert np.allclose(np.abs(mine), np.abs(theirs), rtol=1e-7, atol=1e-7)
    assert np.allclose(np.abs(np.sum(mine * theirs, axis=0)), np.sum(theirs * theirs, axis=0))


def test_the_workers_projection_is_the_models_transform(vectors):
    # What the job writes as `pca` (reduce.project, numpy in the Python workers) is what the
    # saved PCAModel's transform and vector_to_array(float32) give.
    from pyspark.ml.functions import vector_to_array

    model = reduce.fit_pca(vectors, "vector", "pca_vector", DIM, 7, 0.95, rows=600).model
    spark_ml = model.transform(vectors).select(
        "features", vector_to_array("pca_vector", "float32").alias("pca")
    )
    ours = reduce.project(vectors.select("features"), model.pc.toArray(), "features", "pca")
    expected = {tuple(r.features): r.pca for r in spark_ml.collect()}
    got = {tuple(r.features): r.pca for r in ours.collect()}
    assert got.keys() == expected.keys() and len(got) == 600
    for key, values in got.items():
        assert len(values) == 7
        assert np.allclose(values, expected[key], rtol=1e-6, atol=1e-6)


def test_identical_rows_have_no_principal_components(spark):
    from pyspark.ml.functions import array_to_vector

    same = spark.createDataFrame([([1.5] * DIM,)] * 10, "features array<float>")
    frame = same.select("features", array_to_vector("features").alias("vector"))
    with pytest.raises(FeaturizerError, match="the features have no variance"):
        reduce.fit_pca(frame, "vector", "pca_vector", DIM, 2, 0.95, rows=10)
