"""The featurization pandas UDF and the per-Python-worker engine cache.

Like `pyspark.ml.functions.predict_batch_udf`: the engine is built once per Python
worker process (Spark reuses workers across tasks and micro-batches) and kept in a
module-level cache keyed by the payload's hash, so the broadcast is only read, and the
model only built, on a cache miss.
"""

from __future__ import annotations

import resource
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pandas as pd

from featurizer import engines, images, reduce, vectors
from featurizer.weights import FEATURE_DIM

RESULT_DDL = f"struct<features: {vectors.STAGED_TYPE}, error: string>"


class MaxParam:
    """Accumulator that keeps the maximum (peak memory across workers)."""

    def zero(self, value: float) -> float:
        return 0.0

    def addInPlace(self, first: float, second: float) -> float:
        return max(first, second)


class MomentsParam:
    """Accumulator of reduce.Moments: each task's sums of its featurized rows, added on the
    driver (the PCA's covariance without another pass over the staged rows)."""

    def zero(self, value: reduce.Moments) -> reduce.Moments:
        return reduce.Moments(value.dim)

    def addInPlace(self, first: reduce.Moments, second: reduce.Moments) -> reduce.Moments:
        first += second
        return first


_PREDICTORS: dict[str, engines.Predictor] = {}


def cached_predictor(key: str, build: Callable[[], engines.Predictor]) -> engines.Predictor:
    if key not in _PREDICTORS:
        _PREDICTORS.clear()  # one engine per worker: drop a previous run's model
        _PREDICTORS[key] = build()
    return _PREDICTORS[key]


def featurize_contents(
    contents: Sequence[bytes | None],
    predictor: engines.Predictor,
    batch_size: int,
    moments: reduce.Moments | None = None,
) -> pd.DataFrame:
    """Decode + featurize one Arrow batch of file contents, `batch_size` images at a time,
    adding the features to `moments` if given. Features are staged bytes (vectors.pack);
    undecodable files get an error message instead; engine failures raise (Spark then
    retries the task)."""
    features: list[bytes | None] = [None] * len(contents)
    errors: list[str | None] = [None] * len(contents)
    for start in range(0, len(contents), batch_size):
        decoded, chunk_errors = images.decode_many(contents[start : start + batch_size])
        good = [start + i for i, error in enumerate(chunk_errors) if error is None]
        if good:
            features_of_good = predictor.predict(images.preprocess(decoded))
            if moments is not None:
                moments.add_rows(features_of_good)
            for row, vector in zip(good, features_of_good):
                features[row] = vectors.pack(vector)
        errors[start : start + len(chunk_errors)] = chunk_errors
    return pd.DataFrame({"features": features, "error": errors})


def _task_cpus() -> int:
    from pyspark import TaskContext

    context = TaskContext.get()
    return max(1, int(context.cpus())) if context is not None else 1


def peak_rss_mb(pid: int | str = "self") -> float | None:
    """Peak resident memory of a process (VmHWM). Not getrusage's ru_maxrss: Linux carries
    that across exec, so a process started by a big parent would report the parent's peak."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError):
        pass
    if pid == "self":  # no /proc (macOS): the best we have
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return None


def make_featurize_udf(
    payload: Any,
    key: str,
    engine: str,
    batch_size: int,
    images_done: Any,
    worker_rss_mb: Any,
    moments: Any = None,
) -> Any:
    """A scalar-iterator pandas UDF: content (binary) -> struct<features (staged bytes), error>.

    `payload` is a Broadcast of the engine bytes; `images_done` a counting accumulator
    (progress); `worker_rss_mb` a max accumulator (peak worker memory); `moments`, if
    given, a MomentsParam accumulator that each task adds its rows' sums to (once, at its
    end: Spark merges a task's updates only when the task succeeds).
    """
    from pyspark.sql.functions import pandas_udf

    # An iterator UDF declared by its DDL return type (pyspark's stubs know only other forms).
    @pandas_udf(RESULT_DDL)  # type: ignore[call-overload]
    def featurize(batches: Iterator[pd.Series]) -> Iterator[pd.DataFrame]:
        predictor = cached_predictor(
            key, lambda: engines.load(engine, payload.value, threads=_task_cpus())
        )
        sums = reduce.Moments(FEATURE_DIM) if moments is not None else None
        for contents in batches:
            yield featurize_contents(contents.tolist(), predictor, batch_size, sums)
            images_done.add(len(contents))
        if sums is not None and sums.count:
            moments.add(sums)
        worker_rss_mb.add(peak_rss_mb() or 0.0)

    return featurize
