"""PCA with Spark ML: fit once on the full spectrum, keep the first k components.

Spark's PCA computes the covariance matrix in one distributed pass and decomposes it on
the driver (1280 x 1280: small). We fit with all components once, choose k from the
explained-variance curve, and build the k-component `PCAModel` from the same
eigenvectors (what `PCA(k=k).fit` would compute, without a second pass over the data).
Component signs are canonicalized (largest-magnitude loading positive) so reruns give
the same projections.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from featurizer.errors import ConfigError, FeaturizerError


@dataclass(frozen=True)
class PcaResult:
    model: Any  # pyspark.ml.feature.PCAModel with k components
    k: int
    explained: list[float]  # explained-variance ratio of every component
    clamped_from: int | None = None  # the --pca-k asked for, when more than the data carry
    source: str | None = None  # where a reused model came from (--pca-model)

    @property
    def cumulative(self) -> list[float]:
        return np.cumsum(self.explained).tolist()

    @property
    def variance_explained(self) -> float:
        return min(1.0, float(np.sum(self.explained[: self.k])))  # no 1.0000000000000009


def choose_k(explained: Sequence[float], target: float) -> int:
    """The smallest k whose cumulative explained variance reaches `target`."""
    cumulative = np.cumsum(np.asarray(explained, dtype=np.float64))
    k = int(np.searchsorted(cumulative, target - 1e-12)) + 1
    return max(1, min(k, len(cumulative)))


def canonical_signs(components: np.ndarray) -> np.ndarray:
    """Flip each column so that its largest-|x| entry is positive."""
    rows = np.argmax(np.abs(components), axis=0)
    signs = np.sign(components[rows, np.arange(components.shape[1])])
    signs[signs == 0] = 1.0
    return components * signs


def fit_pca(
    df: Any, input_col: str, output_col: str, dim: int, k: int | None, variance: float, rows: int
) -> PcaResult:
    """Fit PCA on a DataFrame of `rows` `dim`-d ML vectors."""
    from pyspark.ml.feature import PCA

    if rows < 2:
        raise FeaturizerError("PCA needs at least 2 featurized images")
    full = PCA(k=dim, inputCol=input_col, outputCol=output_col).fit(df)
    explained = full.explainedVariance.toArray().tolist()
    if not np.all(np.isfinite(explained)):
        raise FeaturizerError(
            "the features have no variance (are all images identical?); PCA is undefined"
        )
    # n images span at most n - 1 directions: components beyond carry no variance.
    clamped_from = k if k is not None and k > rows - 1 else None
    chosen = min(k, rows - 1) if k is not None else choose_k(explained, variance)
    components = canonical_signs(_leading_components(df.sparkSession.sparkContext, full, chosen))
    model = _pca_model(df.sparkSession, components, explained[:chosen], input_col, output_col)
    return PcaResult(model=model, k=chosen, explained=explained, clamped_from=clamped_from)


def load_pca(spark: Any, uri: str, dim: int, input_col: str, output_col: str) -> PcaResult:
    """A PCAModel saved by an earlier run (its pca_model/ folder), checked against `dim`."""
    from pyspark.ml.feature import PCAModel

    try:
        model = PCAModel.load(uri)
    except Exception as exc:
        from featurizer import errors

        raise ConfigError(
            f"cannot load the PCA model {uri} (--pca-model, the pca_model/ "
            f"folder of an earlier output): {errors.cause(exc)}"
        ) from None
    rows = model.pc.numRows
    if rows != dim:
        raise ConfigError(
            f"--pca-model {uri} projects {rows}-d vectors; these features are "
            f"{dim}-d: use the pca_model/ of a featurizer output"
        )
    model = model.setInputCol(input_col).setOutputCol(output_col)
    explained = model.explainedVariance.toArray().tolist()
    return PcaResult(model=model, k=model.getK(), explained=explained, source=uri)


def _leading_components(sc: Any, model: Any, k: int) -> np.ndarray:
    """The first k columns of the model's principal components. Sliced in the JVM: pulling
    the whole 1280 x 1280 matrix through Py4J took 0.7-0.9 s of every run."""
    from pyspark.ml.common import _java2py

    pc = model._java_obj.pc()
    if pc.isTransposed():  # row-major: columns are not contiguous
        return model.pc.toArray()[:, :k]
    jvm = sc._jvm
    leading = jvm.java.util.Arrays.copyOfRange(pc.values(), 0, pc.numRows() * k)
    return _java2py(
        sc, jvm.org.apache.spark.ml.linalg.DenseMatrix(pc.numRows(), k, leading)
    ).toArray()


def _pca_model(
    spark: Any, components: np.ndarray, explained: Sequence[float], input_col: str, output_col: str
) -> Any:
    """A Spark ML PCAModel with the given principal components (columns)."""
    from pyspark.ml.common import _py2java
    from pyspark.ml.feature import PCAModel
    from pyspark.ml.linalg import DenseMatrix, DenseVector

    sc = spark.sparkContext
    rows, cols = components.shape
    pc = DenseMatrix(rows, cols, components.flatten(order="F").tolist())
    java_model = sc._jvm.org.apache.spark.ml.feature.PCAModel(
        sc._jvm.org.apache.spark.ml.util.Identifiable.randomUID("pca"),
        _py2java(sc, pc),
        _py2java(sc, DenseVector(list(explained))),
    )
    model = PCAModel(java_model)
    model._transfer_params_from_java()
    # Params live on the Python side and are copied to Java on transform/save.
    model._set(k=cols, inputCol=input_col, outputCol=output_col)
    return model
