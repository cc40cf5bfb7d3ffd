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

from featurizer import vectors
from featurizer.errors import ConfigError, FeaturizerError


@dataclass(frozen=True)
class PcaResult:
    model: Any  # pyspark.ml.feature.PCAModel with k components
    components: np.ndarray  # the model's k principal components as the columns of (dim, k)
    k: int
    explained: list[float]  # explained-variance ratio of every component
    clamped_from: int | None = None  # the --pca-k asked for, when more than the data carry
    source: str | None = None  # where a reused model came from (--pca-model)
    summed: str | None = None  # where the covariance was summed: "featurizing" or "staged rows"

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
    gathered: Moments | None = None,
) -> PcaResult:
    """Fit PCA on `rows` `dim`-d float arrays (`features_col`); the model projects the ML
    vectors of `input_col` into `output_col`. `gathered`: the rows' Moments when they were
    summed already (while featurizing); else one pass over `df` sums them."""
    if rows < 2:
        raise FeaturizerError("PCA needs at least 2 featurized images")
    sums = gathered if gathered is not None else moments(df, features_col, dim)
    ratios, eigenvectors = principal_components(sums.covariance())
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
    return PcaResult(
        model=model,
        components=components,  # not read back from the JVM (k = 371: 0.3 s through Py4J)
        k=chosen,
        explained=explained,
        clamped_from=clamped_from,
        summed="featurizing" if gathered is not None else "staged rows",
    )


_UPPER: dict[int, np.ndarray] = {}


def _upper(dim: int) -> np.ndarray:
    """Flat indices of a dim x dim matrix's upper triangle (diagonal included)."""
    if dim not in _UPPER:
        _UPPER[dim] = np.flatnonzero(np.triu(np.ones((dim, dim), dtype=bool)))
    return _UPPER[dim]


class Moments:
    """Sums over rows of x and of x^T x (float64): what the covariance needs, and addable,
    so partial sums from many tasks (or from the featurizing UDF itself) combine exactly.
    The Gramian is kept as its upper triangle (6.5 MB at 1280-d), so adding two is one
    vector addition (the driver adds one per task). Rows are added in blocks of BLOCK_ROWS
    (one matrix product per block: the engine hands over one image at a time, and a rank-1
    update per image cost more than the inference). They travel as bytes (`to_bytes`): a
    featurizing task's as a file beside its staged part (udf.make_featurize), never through
    the JVM, where each task's 6.5 MB were copied four times into humongous arrays."""

    BLOCK_ROWS = 512

    def __init__(self, dim: int) -> None:
        self.dim, self.count = dim, 0
        self.sums: np.ndarray | None = None
        self.upper: np.ndarray | None = None  # x^T x, upper triangle, row-major
        self._block: np.ndarray | None = None  # rows not yet in `upper` and `sums`
        self._pending = 0

    def add_rows(self, x: np.ndarray) -> None:
        x = np.asarray(x).reshape(-1, self.dim)
        while len(x):
            if self._block is None:
                self._block = np.empty((self.BLOCK_ROWS, self.dim))
            take = min(len(x), self.BLOCK_ROWS - self._pending)
            self._block[self._pending : self._pending + take] = x[:take]
            self._pending += take
            self.count += take
            x = x[take:]
            if self._pending == self.BLOCK_ROWS:
                self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        assert self._block is not None
        rows = self._block[: self._pending]
        self._add(rows.sum(axis=0), (rows.T @ rows).ravel()[_upper(self.dim)])
        self._pending = 0

    def _add(self, sums: np.ndarray, upper: np.ndarray) -> None:
        if self.sums is None or self.upper is None:
            self.sums, self.upper = np.zeros(self.dim), np.zeros(len(upper))
        self.sums += sums
        self.upper += upper

    def __iadd__(self, other: Moments) -> Moments:
        other._flush()
        if other.sums is not None and other.upper is not None:
            self._flush()
            self._add(other.sums, other.upper)
        self.count += other.count
        return self

    def covariance(self) -> np.ndarray:
        """The sample covariance, as Spark's RowMatrix computes it: (G - n m m^T) / (n - 1)."""
        self._flush()
        if self.sums is None or self.upper is None:
            return np.zeros((self.dim, self.dim))
        flat = np.zeros(self.dim * self.dim)
        flat[_upper(self.dim)] = self.upper
        gram = flat.reshape(self.dim, self.dim)
        gram += np.triu(gram, 1).T
        mean = self.sums / self.count
        return (gram - self.count * np.outer(mean, mean)) / max(self.count - 1, 1)

    def to_bytes(self) -> bytes:
        """The sums as an .npz file (what `from_bytes` reads; no pickle)."""
        import io

        self._flush()
        buffer = io.BytesIO()
        empty = np.zeros(0)
        np.savez(
            buffer,
            dim=self.dim,
            count=self.count,
            sums=empty if self.sums is None else self.sums,
            upper=empty if self.upper is None else self.upper,
        )
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Moments:
        import io

        with np.load(io.BytesIO(data), allow_pickle=False) as saved:
            moments = cls(int(saved["dim"]))
            moments.count = int(saved["count"])
            if len(saved["sums"]):
                moments.sums, moments.upper = saved["sums"], saved["upper"]
        return moments


def moments(df: Any, column: str, dim: int) -> Moments:
    """The Moments of a column of vectors (staged bytes or float arrays), in one pass over
    the rows."""
    sc = df.sparkSession.sparkContext
    partials = max(1, min(sc.defaultParallelism, GRAM_PARTIALS))

    def partial_sums(batches: Any) -> Any:  # in a Python worker: nothing big in its closure
        import pyarrow as pa

        part = Moments(dim)
        for batch in batches:
            if batch.num_rows:
                part.add_rows(vectors.unpack(batch.column(0), dim))
        yield pa.RecordBatch.from_pydict({"part": [part.to_bytes()]})

    total = Moments(dim)
    parts = df.select(column).coalesce(partials).mapInArrow(partial_sums, "part binary")
    for row in parts.toLocalIterator():  # one partial at a time: two matrices on the driver
        total += Moments.from_bytes(row["part"])
    return total


def project(df: Any, components: np.ndarray, features_col: str, output_col: str) -> Any:
    """`df` plus `output_col`: each row's `features_col` (staged bytes or float arrays, given
    back as float arrays) times `components` (see `projection`), computed on whole Arrow
    batches in the Python workers instead of one vector conversion and BLAS call per row in
    the JVM."""
    schema = projected_schema(df.schema, features_col, output_col)
    transform = projection(components, df.columns.index(features_col), output_col)
    return df.mapInArrow(lambda batches: map(transform, batches), schema)


def projected_schema(schema: Any, features_col: str, output_col: str) -> Any:
    """The Spark schema of `projection`'s batches: `features_col` as float arrays, plus
    `output_col`."""
    from pyspark.sql.types import ArrayType, FloatType, StructField, StructType

    floats = ArrayType(FloatType())
    fields = [
        StructField(field.name, floats) if field.name == features_col else field
        for field in schema.fields
    ]
    return StructType([*fields, StructField(output_col, floats)])


def projection(components: np.ndarray, index: int, output_col: str) -> Any:
    """One Arrow batch -> the batch with its column `index` (staged bytes or float lists)
    as float lists and `output_col` appended: the vectors times `components`, uncentered,
    in float64, kept as float32 (what a PCAModel's transform then vector_to_array(float32)
    gives)."""
    dim = components.shape[0]

    def transform(batch: Any) -> Any:  # in a Python worker
        import pyarrow as pa

        x = vectors.unpack(batch.column(index), dim)
        columns = list(batch.columns)
        if not pa.types.is_list(columns[index].type):
            columns[index] = vectors.as_lists(x)
        values = (x.astype(np.float64) @ components).astype(np.float32)
        return pa.RecordBatch.from_arrays(
            [*columns, vectors.as_lists(values)], names=[*batch.schema.names, output_col]
        )

    return transform


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
    return PcaResult(
        model=model,
        components=np.asarray(model.pc.toArray()),
        k=model.getK(),
        explained=explained,
        source=uri,
    )


def _pca_model(
    spark: Any, components: np.ndarray, explained: Sequence[float], input_col: str, output_col: str
) -> Any:
    """A Spark ML PCAModel with the given principal components (columns)."""
    from pyspark.ml.common import _py2java
    from pyspark.ml.feature import PCAModel
    from pyspark.ml.linalg import DenseMatrix, DenseVector

    sc = spark.sparkContext
    rows, cols = components.shape
    pc = DenseMatrix(rows, cols, components.flatten(order="F"))
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
