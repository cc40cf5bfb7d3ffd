"""The report's charts as PNG bytes (matplotlib, Agg backend)."""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Sequence

import numpy as np

SCATTER_POINTS = 6000  # enough to see the structure, small enough to draw fast
LEGEND_CLASSES = 12  # named in the scatter's legend; the rest are "other"


def pyplot():
    """matplotlib's pyplot on the Agg backend (no display), without per-glyph warnings."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    # Class names may hold characters the font lacks (emoji, tabs) and be very long: the
    # charts are still right, matplotlib would print a warning per glyph and per layout.
    warnings.filterwarnings("ignore", r"Glyph \d+ .* missing from font", UserWarning)
    warnings.filterwarnings("ignore", r"Tight layout not applied", UserWarning)
    return plt


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    pyplot().close(figure)
    return buffer.getvalue()


def sample_rows(count: int, limit: int, seed: int = 0) -> np.ndarray:
    if count <= limit:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, size=limit, replace=False))


def legend_classes(labels: np.ndarray, limit: int = LEGEND_CLASSES) -> list[str]:
    """The classes named in the legend: the largest ones; where sizes tie at the cut,
    classes spread evenly over the (sorted) tied names rather than the first few."""
    counts = Counter(labels.tolist())
    ranked = sorted(counts, key=lambda label: (-counts[label], label))
    if len(ranked) <= limit:
        return ranked
    cutoff = counts[ranked[limit - 1]]
    larger = [label for label in ranked if counts[label] > cutoff]
    tied = [label for label in ranked if counts[label] == cutoff]
    need = limit - len(larger)
    return larger + [tied[i * len(tied) // need] for i in range(need)]


def pca_scatter_png(pca: np.ndarray, labels: np.ndarray, explained: Sequence[float]) -> bytes:
    """PC1 vs PC2 coloured by label: a dozen classes named, the rest grey 'other'."""
    plt = pyplot()
    rows = sample_rows(len(labels), SCATTER_POINTS)
    second = pca[rows, 1] if pca.shape[1] > 1 else np.zeros(len(rows))
    xy, sample_labels = np.column_stack([pca[rows, 0], second]), labels[rows]
    named = legend_classes(labels)
    classes = len(set(labels.tolist()))
    figure, axes = plt.subplots(figsize=(10, 6), dpi=100)
    rest = ~np.isin(sample_labels, named)
    if classes > len(named):
        axes.scatter(
            xy[rest, 0],
            xy[rest, 1],
            s=5,
            color="#c7c7c7",
            alpha=0.6,
            linewidths=0,
            label=f"other ({classes - len(named)} classes)",
        )
    colours = plt.get_cmap("tab20").colors
    for i, label in enumerate(named):
        mask = sample_labels == label
        axes.scatter(
            xy[mask, 0],
            xy[mask, 1],
            s=9,
            color=colours[(2 * i) % 20 + (i >= 10)],
            alpha=0.9,
            linewidths=0,
            label=f"{label} ({np.sum(labels == label):,})",
        )
    axes.set_xlabel(f"PC1 ({explained[0]:.1%} of variance)" if explained else "PC1")
    axes.set_ylabel(f"PC2 ({explained[1]:.1%} of variance)" if len(explained) > 1 else "PC2")
    shown = (
        f"{len(rows):,} of {len(labels):,} images"
        if len(rows) < len(labels)
        else f"{len(labels):,} images"
    )
    axes.set_title(f"First two principal components ({shown})")
    axes.grid(alpha=0.25)
    axes.legend(
        loc="upper left",
        bbox_to_anchor=(1.01, 1),
        fontsize=8,
        frameon=False,
        markerscale=2,
        title=f"{len(named)} of {classes} classes (images)",
    )
    figure.tight_layout()
    return _png(figure)
