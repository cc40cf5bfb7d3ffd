"""Linear probe: how well a logistic regression recovers the label from the features.

Multinomial logistic (softmax) regression, full batch, L2, standardized inputs, solved
with scipy's L-BFGS-B to a fixed relative tolerance from a zero start. A probe is a
measurement, not a model to ship: no randomness, so two reports of the same output are
identical, and converged, so the accuracy is the features' and not the optimizer's.
"""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

TRAIN_FOLDERS = ("training", "train")
TEST_FOLDERS = ("test", "testing")


@dataclass(frozen=True)
class Settings:
    """How a probe is fitted and measured: the one definition, recorded in report.json."""

    seed: int = 0  # the stratified split's and the row cap's
    l2: float = 1e-3
    max_iterations: int = 200  # L-BFGS stops at `tolerance` first (~30 iterations here)
    tolerance: float = 1e-5  # relative change of the loss in one iteration
    # L-BFGS corrections kept (scipy's default 10): L-BFGS-B's own steps, memory-bound over
    # 168k weights, cost half as much; the iterations stayed 33-34 (BENCHMARKS.md, 13th round).
    history: int = 5
    max_train_rows: int = 10_000  # bounds the probe (~2 s for 1280-d features) on big outputs


@dataclass(frozen=True)
class Split:
    train: np.ndarray  # row indices
    test: np.ndarray
    method: str  # how the rows were split, for people


@dataclass
class ProbeResult:
    source: str  # "pca" or "features"
    dim: int
    train_rows: int
    test_rows: int
    train_accuracy: float
    test_accuracy: float
    seconds: float
    iterations: int = 0  # L-BFGS iterations the fit took
    per_class: list[dict] = field(default_factory=list)  # every class, worst first
    confused_pairs: list[dict] = field(default_factory=list)  # most frequent mistakes
    unseen_test_rows: int = 0  # test rows whose class has no training row

    def to_dict(self, worst: int = 10) -> dict:
        perfect = sum(1 for row in self.per_class if row["accuracy"] == 1.0)
        return {
            "source": self.source,
            "dim": self.dim,
            "train_rows": self.train_rows,
            "test_rows": self.test_rows,
            "train_accuracy": self.train_accuracy,
            "test_accuracy": self.test_accuracy,
            "seconds": round(self.seconds, 2),
            "iterations": self.iterations,
            "unseen_test_rows": self.unseen_test_rows,
            "classes_perfect": perfect,
            "classes_evaluated": len(self.per_class),
            "worst_classes": self.per_class[:worst],
            "confused_pairs": self.confused_pairs,
            "per_class_accuracy": {
                row["label"]: row["accuracy"]
                for row in sorted(self.per_class, key=lambda r: r["label"])
            },
        }


# ---- splits ------------------------------------------------------------------------------


def folder_split(paths: Sequence[str]) -> Split | None:
    """Train/test from the folder above the class folder (Fruits-360's Training/ and Test/),
    or None when the paths do not hold both."""
    roles = np.array([_role(path) for path in paths])
    train, test = np.flatnonzero(roles == "train"), np.flatnonzero(roles == "test")
    if len(train) == 0 or len(test) == 0:
        return None
    return Split(train, test, "Training/Test folders")


def _role(path: str) -> str:
    parts = path.rstrip("/").split("/")
    folder = parts[-3].lower() if len(parts) >= 3 else ""
    return "train" if folder in TRAIN_FOLDERS else "test" if folder in TEST_FOLDERS else ""


def stratified_split(labels: Sequence[str], test_fraction: float = 0.25, seed: int = 0) -> Split:
    """A seeded split that keeps each class' share; a class with one row stays in train."""
    names = np.asarray(labels)
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in sorted(set(names.tolist())):
        rows = rng.permutation(np.flatnonzero(names == label))
        held = min(int(round(len(rows) * test_fraction)), len(rows) - 1)
        test.append(rows[:held])
        train.append(rows[held:])
    return Split(
        np.sort(np.concatenate(train)),
        np.sort(np.concatenate(test)),
        f"stratified {1 - test_fraction:.0%}/{test_fraction:.0%} split, seed {seed}",
    )


def choose_split(paths: Sequence[str], labels: Sequence[str], seed: int = 0) -> Split:
    return folder_split(paths) or stratified_split(labels, seed=seed)


def cap_rows(rows: np.ndarray, labels: np.ndarray, limit: int, seed: int = 0) -> np.ndarray:
    """At most `limit` of `rows`, sampled per class in proportion (keeps the probe bounded
    on large outputs)."""
    if len(rows) <= limit:
        return rows
    rng = np.random.default_rng(seed)
    kept = []
    for label in sorted(set(labels[rows].tolist())):
        members = rows[labels[rows] == label]
        take = max(1, int(round(len(members) * limit / len(rows))))
        kept.append(rng.choice(members, size=min(take, len(members)), replace=False))
    return np.sort(np.concatenate(kept))


# ---- the model ---------------------------------------------------------------------------


def standardize(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Zero mean, unit variance with the training rows' statistics (constant columns
    are left at zero rather than divided by zero). The squares are summed in float64 from
    the float32 centred rows: numpy's float64 `std` converted every value first (~6x the
    time, for the same figures to ~1e-9)."""
    mean = train.mean(axis=0, dtype=np.float64).astype(np.float32)
    centred = train.astype(np.float32, copy=False) - mean
    std = np.sqrt(np.square(centred).mean(axis=0, dtype=np.float64)).astype(np.float32)
    std[std < 1e-8] = 1.0
    scale = 1 / std
    centred *= scale
    return [centred, *((x.astype(np.float32, copy=False) - mean) * scale for x in others)]


class Softmax(NamedTuple):
    weights: np.ndarray  # (d, c)
    bias: np.ndarray  # (c,)
    iterations: int
    loss: float


def fit_softmax(
    x: np.ndarray,
    y: np.ndarray,
    classes: int,
    settings: Settings = Settings(),
) -> Softmax:
    """Weights and bias minimizing mean cross-entropy + l2/2 |W|^2 (the bias is not
    penalized), by L-BFGS-B until the loss changes by less than the settings' `tolerance`
    (relative) in an iteration, keeping `history` corrections. The products with x run in
    float32; L-BFGS keeps its own float64."""
    from scipy.optimize import minimize

    l2 = settings.l2
    n, d = x.shape
    rows, size = np.arange(n), d * classes

    def loss_and_gradient(theta: np.ndarray) -> tuple[float, np.ndarray]:
        weights = theta[:size].reshape(d, classes).astype(np.float32)
        logits = x @ weights + theta[size:].astype(np.float32)
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        total = exp.sum(axis=1)
        loss = np.mean(np.log(total) - logits[rows, y], dtype=np.float64)
        exp /= total[:, None]  # the probabilities; minus the one-hot: d loss / d logits
        exp[rows, y] -= 1.0
        exp /= n
        gradient = np.concatenate([(x.T @ exp + l2 * weights).ravel(), exp.sum(axis=0)])
        return float(loss + 0.5 * l2 * (theta[:size] @ theta[:size])), gradient.astype(np.float64)

    with _one_blas_pool():
        found = minimize(
            loss_and_gradient,
            np.zeros(size + classes),
            jac=True,
            method="L-BFGS-B",
            options={
                "maxiter": settings.max_iterations,
                "ftol": settings.tolerance,
                "maxcor": settings.history,
            },
        )
    weights = found.x[:size].reshape(d, classes).astype(np.float32)
    return Softmax(weights, found.x[size:].astype(np.float32), int(found.nit), float(found.fun))


@contextlib.contextmanager
def _one_blas_pool() -> Iterator[None]:
    """scipy's wheel brings an OpenBLAS of its own beside numpy's. L-BFGS-B's vector steps
    run on scipy's and the products with x on numpy's; both pools' threads spinning for
    the same cores made the fit ~2x slower (BENCHMARKS.md). scipy's gets one thread."""
    import threadpoolctl

    controller = threadpoolctl.ThreadpoolController()
    scipy_own = [
        lib.filepath
        for lib in controller.lib_controllers
        if f"{os.sep}scipy.libs{os.sep}" in lib.filepath
    ]
    if not scipy_own:  # one shared BLAS (e.g. distribution packages): nothing spins twice
        yield
        return
    with controller.select(filepath=scipy_own).limit(limits=1):
        yield


def predict(x: np.ndarray, weights: np.ndarray, bias: np.ndarray, chunk: int = 8192) -> np.ndarray:
    return np.concatenate(
        [np.argmax(x[i : i + chunk] @ weights + bias, axis=1) for i in range(0, len(x), chunk)]
        or [np.zeros(0, dtype=int)]
    )


# ---- the measurement ---------------------------------------------------------------------


def run_probe(
    source: str,
    x: np.ndarray,
    labels: np.ndarray,
    split: Split,
    settings: Settings = Settings(),
) -> ProbeResult:
    """Fit on split.train (capped), measure on split.test."""
    import time

    start = time.monotonic()
    train_rows = cap_rows(split.train, labels, settings.max_train_rows, settings.seed)
    classes = sorted(set(labels[train_rows].tolist()))
    index = {label: i for i, label in enumerate(classes)}
    y_train = np.array([index[label] for label in labels[train_rows]])
    x_train, x_test = standardize(x[train_rows], x[split.test])
    fit = fit_softmax(x_train, y_train, len(classes), settings)
    weights, bias = fit.weights, fit.bias
    train_pred = predict(x_train, weights, bias)
    test_pred = (
        np.array(classes, dtype=object)[predict(x_test, weights, bias)]
        if len(split.test)
        else np.array([], dtype=object)
    )
    truth = labels[split.test]
    return ProbeResult(
        source=source,
        dim=int(x.shape[1]),
        train_rows=len(train_rows),
        test_rows=len(split.test),
        train_accuracy=float(np.mean(train_pred == y_train)),
        test_accuracy=float(np.mean(test_pred == truth)) if len(truth) else float("nan"),
        seconds=time.monotonic() - start,
        iterations=fit.iterations,
        per_class=per_class_accuracy(truth, test_pred),
        confused_pairs=confused_pairs(truth, test_pred),
        unseen_test_rows=int(sum(1 for label in truth if label not in index)),
    )


def per_class_accuracy(truth: np.ndarray, predicted: np.ndarray) -> list[dict]:
    """Every class' test accuracy, worst first, with what it is most often taken for."""
    rows = []
    for label in sorted(set(truth.tolist())):
        mask = truth == label
        wrong = Counter(predicted[mask & (predicted != truth)].tolist())
        taken_for, times = wrong.most_common(1)[0] if wrong else (None, 0)
        rows.append(
            {
                "label": label,
                "support": int(mask.sum()),
                "accuracy": float(np.mean(predicted[mask] == label)),
                "most_confused_with": taken_for,
                "confused_count": int(times),
            }
        )
    return sorted(rows, key=lambda r: (r["accuracy"], -r["support"], r["label"]))


def confused_pairs(truth: np.ndarray, predicted: np.ndarray, top: int = 10) -> list[dict]:
    """The most frequent (true -> predicted) mistakes."""
    support = Counter(truth.tolist())
    mistakes = Counter((t, p) for t, p in zip(truth.tolist(), predicted.tolist()) if t != p)
    ranked = sorted(mistakes.items(), key=lambda item: (-item[1], item[0]))[:top]
    return [
        {"true": t, "predicted": p, "count": count, "share_of_true": count / support[t]}
        for (t, p), count in ranked
    ]
