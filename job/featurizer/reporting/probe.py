"""Linear probe: how well a logistic regression recovers the label from the features.

Pure numpy, deterministic: multinomial logistic (softmax) regression, full batch, L2,
standardized inputs, Nesterov-accelerated gradient descent with the step size from the
loss' Lipschitz bound. A probe is a measurement, not a model to ship: a fixed schedule
with no randomness makes two reports of the same output identical.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

TRAIN_FOLDERS = ("training", "train")
TEST_FOLDERS = ("test", "testing")


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
    are left at zero rather than divided by zero)."""
    mean = train.mean(axis=0, dtype=np.float64).astype(np.float32)
    std = train.std(axis=0, dtype=np.float64).astype(np.float32)
    std[std < 1e-8] = 1.0
    return [(x.astype(np.float32, copy=False) - mean) / std for x in (train, *others)]


def _softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits - logits.max(axis=1, keepdims=True)
    np.exp(logits, out=logits)
    logits /= logits.sum(axis=1, keepdims=True)
    return logits


def _largest_eigenvalue(x: np.ndarray, iterations: int = 30) -> float:
    """Largest eigenvalue of x.T @ x / n by power iteration from a fixed start."""
    v = np.ones(x.shape[1], dtype=np.float32) / np.sqrt(x.shape[1])
    value = 1.0
    for _ in range(iterations):
        w = x.T @ (x @ v) / len(x)
        value = float(np.linalg.norm(w))
        v = w / max(value, 1e-12)
    return value


def fit_softmax(
    x: np.ndarray, y: np.ndarray, classes: int, l2: float = 1e-3, iterations: int = 200
) -> tuple[np.ndarray, np.ndarray]:
    """Weights (d, c) and bias (c,) minimizing mean cross-entropy + l2/2 |W|^2.

    The cross-entropy's Hessian is bounded by 1/2 * X'X/n, so 1/L with
    L = lambda_max/2 + l2 is a step that never diverges; Nesterov momentum makes a few
    hundred full-batch steps enough on standardized features."""
    n, d = x.shape
    onehot = np.zeros((n, classes), dtype=np.float32)
    onehot[np.arange(n), y] = 1.0
    step = 1.0 / (0.5 * (_largest_eigenvalue(x) + 1.0) + l2)  # +1: the bias column
    weights = np.zeros((d, classes), dtype=np.float32)
    bias = np.zeros(classes, dtype=np.float32)
    previous_w, previous_b = weights, bias
    for t in range(1, iterations + 1):
        momentum = (t - 1) / (t + 2)
        look_w = weights + momentum * (weights - previous_w)
        look_b = bias + momentum * (bias - previous_b)
        residual = _softmax(x @ look_w + look_b)
        residual -= onehot
        residual /= n
        grad_w = x.T @ residual + l2 * look_w
        grad_b = residual.sum(axis=0)
        previous_w, previous_b = weights, bias
        weights = (look_w - step * grad_w).astype(np.float32)
        bias = (look_b - step * grad_b).astype(np.float32)
    return weights, bias


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
    max_train_rows: int = 10_000,
    l2: float = 1e-3,
    iterations: int = 200,
) -> ProbeResult:
    """Fit on split.train (capped), measure on split.test."""
    import time

    start = time.monotonic()
    train_rows = cap_rows(split.train, labels, max_train_rows)
    classes = sorted(set(labels[train_rows].tolist()))
    index = {label: i for i, label in enumerate(classes)}
    y_train = np.array([index[label] for label in labels[train_rows]])
    x_train, x_test = standardize(x[train_rows], x[split.test])
    weights, bias = fit_softmax(x_train, y_train, len(classes), l2=l2, iterations=iterations)
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
