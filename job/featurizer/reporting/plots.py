"""The report's charts as PNG bytes (matplotlib, Agg backend)."""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Sequence

import numpy as np

SCATTER_POINTS = 6000  # enough to see the structure, small enough to draw fast
LEGEND_CLASSES = 12  # named in the scatter's legend; the rest are "other"
LABELED_BARS = 150  # above this many classes the bars carry no names


def _pyplot():
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
    _pyplot().close(figure)
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
    plt = _pyplot()
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


def class_counts_png(counts: dict[str, dict[str, int]]) -> bytes:
    """Images per class, largest first, stacked by split (e.g. Training / Test).
    Horizontal bars so that up to LABELED_BARS class names stay readable."""
    plt = _pyplot()
    totals = {label: sum(parts.values()) for label, parts in counts.items()}
    order = sorted(totals, key=lambda label: (-totals[label], label))
    split_sizes: Counter[str] = Counter()
    for parts in counts.values():
        split_sizes.update(parts)
    splits = [split for split, _ in split_sizes.most_common()]
    labeled = len(order) <= LABELED_BARS
    height = 0.13 * len(order) + 1.2 if labeled else 4.0
    figure, axes = plt.subplots(figsize=(10, height), dpi=100)
    positions = np.arange(len(order))
    left = np.zeros(len(order))
    for split, colour in zip(splits, ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b")):
        widths = np.array([counts[label].get(split, 0) for label in order], dtype=float)
        axes.barh(positions, widths, left=left, height=0.8, color=colour, label=split)
        left += widths
    if labeled:
        axes.set_yticks(positions, order, fontsize=7)
    else:
        axes.set_yticks([])
        axes.set_ylabel(f"{len(order):,} classes, largest first")
    axes.set_ylim(len(order) - 0.4, -0.6)  # largest at the top
    axes.set_xlim(0, max(totals.values()) * 1.2)  # room for the legend beside the bars
    axes.set_xlabel("images")
    values = list(totals.values())
    axes.set_title(
        f"Images per class: min {min(values):,}, median {int(np.median(values)):,}, "
        f"max {max(values):,}"
    )
    if len(splits) > 1:
        axes.legend(fontsize=8, loc="lower right")
    axes.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    return _png(figure)
