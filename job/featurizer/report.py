"""What a run leaves for people: manifest.json, the explained-variance plot, the summary."""

from __future__ import annotations

import io
import json
import platform
from collections.abc import Mapping, Sequence
from importlib import metadata
from typing import Any

PACKAGES = (
    "pyspark",
    "tensorflow",
    "tensorflow-cpu",
    "keras",
    "numpy",
    "pandas",
    "pyarrow",
    "pillow",
    "ai-edge-litert",
)


def versions(spark_version: str) -> dict[str, str]:
    """Versions of everything that shapes the features (no heavy imports)."""
    found = {"python": platform.python_version(), "spark": spark_version}
    for package in PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return found


def manifest_json(manifest: Mapping[str, Any]) -> bytes:
    return (json.dumps(manifest, indent=2, sort_keys=False) + "\n").encode()


def explained_variance_png(cumulative: Sequence[float], k: int, target: float | None) -> bytes:
    """Cumulative explained variance with the chosen k marked."""
    from featurizer.reporting.plots import pyplot

    plt = pyplot()

    figure, axes = plt.subplots(figsize=(7, 4.2), dpi=110)
    shown = max(k * 2, min(len(cumulative), 200))
    xs = range(1, min(shown, len(cumulative)) + 1)
    axes.plot(list(xs), cumulative[: len(xs)], color="#1f77b4", linewidth=2)
    axes.axvline(k, color="#d62728", linestyle="--", linewidth=1.2)
    axes.scatter([k], [cumulative[k - 1]], color="#d62728", zorder=3)
    axes.annotate(
        f"k = {k}: {cumulative[k - 1]:.1%}",
        (k, cumulative[k - 1]),
        textcoords="offset points",
        xytext=(8, -16),
        color="#d62728",
    )
    if target is not None:
        axes.axhline(target, color="gray", linestyle=":", linewidth=1)
    axes.set_xlabel("principal components")
    axes.set_ylabel("cumulative explained variance")
    axes.set_ylim(0, 1.01)
    axes.set_title("PCA of MobileNetV2 features")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def summary_table(manifest: Mapping[str, Any]) -> str:
    counts, pca, speed = manifest["counts"], manifest["pca"], manifest["throughput"]
    rows = [
        (
            "images",
            f"{counts['featurized']:,} featurized, {counts['failed']:,} failed "
            f"(of {counts['found']:,} found)",
        ),
        ("classes", f"{manifest['classes']:,}"),
        ("pca k", f"{pca['k']} ({pca['variance_explained']:.1%} variance explained)"),
        (
            "images/s",
            f"{speed['featurize_images_per_s']:.1f} featurize, "
            f"{speed['end_to_end_images_per_s']:.1f} end to end",
        ),
        ("wall time", f"{manifest['timings_s']['total']:.1f} s"),
        ("output", manifest["output"]),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"  {name.ljust(width)}  {value}" for name, value in rows)
