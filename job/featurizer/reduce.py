"""PCA: the covariance in one pass of BLAS in the Python workers, a Spark ML model out.

Spark ML's `PCA.fit` reads the rows twice (column statistics, then the Gramian) and adds
each row to the 1280 x 1280 Gramian with a rank-1 BLAS update (`dspr`: the whole 6.5 MB
packed matrix touched per row, memory-bound). Here each Python worker sums X^T X and X over
its rows with matrix products on whole Arrow batches, the driver adds at most
GRAM_PARTIALS partial sums and decomposes the covariance (1280 x 1280: small) exactly as
Spark's RowMatrix does: (G - n m m^T) / (n - 1), singular values = |eigenvalues|, descending.
All components are computed once, k is chosen from the explained-variance curve, and the
k-component Spark ML `PCAModel` is built from the leading eigenvectors (what `PCA(k).fit`
gives). Component signs are canonicalized (largest-magnitude loading positive) so reruns
give the same projections.
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


GRAM_PARTIALS = 32  # at most this many partial sums reach the driver (6.5 MB each at 1280-d)


def fit_pca(
    df: Any,
    input_col: str,
    output_col: str,
    dim: int,
    k: int | None,
    variance: float,
    rows: int,
    features_col: str = "features",
) -> PcaResult:
    """Fit PCA on `rows` `dim`-d float arrays (`features_col`); the model projects the ML
    vectors of `input_col` into `output_col`."""
    if rows < 2:
        raise FeaturizerError("PCA needs at least 2 featurized images")
    ratios, eigenvectors = principal_components(covariance(df, features_col, dim))
    explained: list[float] = ratios.tolist()
    if not np.all(np.isfinite(explained)):
        raise FeaturizerError(
            "the features have no variance (are all images identical?); PCA is undefined"
        )
    # n images span at most n - 1 directions: components beyond carry no variance.
    clamped_from = k if k is not None and k > rows - 1 else None
    chosen = min(k, rows - 1) if k is not None else choose_k(explained, variance)
    components = canonical_signs(eigenvectors[:, :chosen])
    model = _pca_model(df.sparkSession, components, explained[:chosen], input_col, output_col)
    return PcaResult(model=model, k=chosen, explained=explained, clamped_from=clamped_from)


def covariance(df: Any, column: str, dim: int) -> np.ndarray:
    """The sample covariance of an array<float> column, in one pass over the rows."""
    sc = df.sparkSession.sparkContext
    partials = max(1, min(sc.defaultParallelism, GRAM_PARTIALS))

    def partial_sums(batches: Any) -> Any:  # in a Python worker: nothing big in its closure
        import pyarrow as pa

        upper = np.triu_indices(dim)
        count, sums, gram = 0, np.zeros(dim), np.zeros((dim, dim))
        for batch in batches:
            arrays = batch.column(0)
            if len(arrays):
                x = arrays.flatten().to_numpy().reshape(len(arrays), dim).astype(np.float64)
                count += len(x)
                sums += x.sum(axis=0)
                gram += x.T @ x
        yield pa.RecordBatch.from_pydict(
            {"n": [count], "sums": [sums.tobytes()], "gram": [gram[upper].tobytes()]}
        )

    upper = np.triu_indices(dim)
    count, sums, packed = 0, np.zeros(dim), np.zeros(len(upper[0]))
    parts = (
        df.select(column)
        .coalesce(partials)
        .mapInArrow(partial_sums, "n long, sums binary, gram binary")
        .toLocalIterator()
    )
    for part in parts:  # one partial at a time: the driver holds two matrices, not 32
        count += part["n"]
        sums += np.frombuffer(part["sums"])
        packed += np.frombuffer(part["gram"])
    gram = np.zeros((dim, dim))
    gram[upper] = packed
    gram += np.triu(gram, 1).T
    mean = sums / max(count, 1)
    return (gram - count * np.outer(mean, mean)) / max(count - 1, 1)


def principal_components(cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(explained-variance ratio of every component, eigenvectors as columns), by
    decreasing variance: the SVD of the symmetric covariance Spark's RowMatrix takes."""
    values, vectors = np.linalg.eigh(cov)
    order = np.argsort(-np.abs(values), kind="stable")
    singular = np.abs(values[order])
    with np.errstate(invalid="ignore", divide="ignore"):  # no variance: NaN, refused above
        return singular / singular.sum(), vectors[:, order]


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
