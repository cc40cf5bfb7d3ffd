"""`featurizer report`: report.json + one self-contained HTML page about a run's output.

Reads only the output folder (local or S3, with pyarrow): the manifest for what the run
did, features/ for the PCA scatter, the class counts and a linear probe of label quality,
errors/ for why files failed. `write_report` is what `featurizer run` calls at its end.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

REPORT_JSON = "report.json"
REPORT_HTML = "report.html"
TOP_ERRORS = 10
WORST_CLASSES = 10


@dataclass(frozen=True)
class Written:
    report: dict
    json_uri: str
    html_uri: str


def write_report(
    spark: Any,
    output_uri: str,
    html: str | None = None,
    json_file: str | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> Written:
    """Build the report of `output_uri` and write report.json and report.html (by default
    into the output folder). `spark` may be None; when given, its S3A settings are used."""
    from featurizer.reporting import page, source

    started = time.monotonic()
    output = source.load(output_uri, spark)
    loaded = time.monotonic() - started
    report, images = build_report(output, log)
    seconds = report["report_seconds"]  # the whole report's cost, reading included
    seconds.update(load=round(loaded, 2), total=round(seconds["total"] + loaded, 2))
    json_target = _target(output.location, json_file, REPORT_JSON, spark)
    html_target = _target(output.location, html, REPORT_HTML, spark)
    json_target.write((json.dumps(report, indent=2) + "\n").encode())
    html_target.write(page.render(report, images).encode())
    return Written(report, json_target.uri, html_target.uri)


def import_modules() -> None:
    """Import what the report runs on (scipy's optimizer, pyarrow's datasets, matplotlib:
    ~0.8 s of a 2 s report at 5,240 images). `featurizer run` calls it in a thread while
    Spark writes the results, when the driver's Python only waits."""
    import pyarrow.dataset  # noqa: F401
    import scipy.optimize  # noqa: F401

    from featurizer.reporting import plots, probe, source  # noqa: F401

    plots.pyplot()


def after_run(spark: Any, output_uri: str, log: Callable[[str], None] = print) -> None:
    """The report at the end of `featurizer run`: the run is already committed, so a
    failing report is a warning with the command to retry, never a failed run."""
    try:
        written = write_report(spark, output_uri, log=log)
    except Exception as exc:
        log(
            f"warning: the report could not be written ({type(exc).__name__}: {exc}); "
            f"retry with: featurizer report {output_uri}"
        )
        return
    log(f"report: {written.html_uri}")


@dataclass(frozen=True)
class _Target:
    """Where one report file goes: its file system (an arrow_files.Location), path and URI."""

    location: Any
    path: str
    uri: str

    def write(self, data: bytes) -> None:
        self.location.write_bytes(self.path, data, absolute=True)


def _target(location: Any, override: str | None, default: str, spark: Any) -> _Target:
    from featurizer import arrow_files

    if override is None:
        return _Target(location, location.child(default), f"{location.uri}/{default}")
    where = arrow_files.locate(override, spark)
    return _Target(where, where.path, where.uri)


def build_report(
    output: Any, log: Callable[[str], None] = lambda message: None
) -> tuple[dict, dict[str, bytes]]:
    """report.json's content and the PNG charts, from a loaded RunOutput."""
    from featurizer import report as run_report
    from featurizer.reporting import plots

    manifest, started = output.manifest, time.monotonic()
    seconds: dict[str, float] = {}
    pca_info = manifest.get("pca") or {}
    images: dict[str, bytes] = {}
    report = {
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "complete": output.complete,
        "run": {
            key: manifest.get(key)
            for key in (
                "status",
                "input",
                "output",
                "counts",
                "classes",
                "timings_s",
                "throughput",
                "versions",
                "weights",
                "engine",
                "spark",
                "memory_mb",
                "parameters",
                "started_at",
                "finished_at",
            )
            if key in manifest
        },
        "errors": error_summary(output.errors),
        "pca": _pca_summary(pca_info),
        "classes": class_summary(output.paths, output.labels),
    }
    report["run"].setdefault("output", output.location.uri)
    if pca_info.get("explained_variance") and pca_info.get("k"):
        cumulative = _cumulative(pca_info["explained_variance"])
        images["explained_variance"] = (
            output.explained_variance_png  # the run drew it from the same figures
            or run_report.explained_variance_png(
                cumulative, pca_info["k"], pca_info.get("variance_target")
            )
        )
    if output.pca is not None and len(output.labels):
        images["pca_scatter"] = plots.pca_scatter_png(
            output.pca, output.labels[output.vector_rows], pca_info.get("explained_variance") or []
        )
    seconds["charts"] = time.monotonic() - started
    report["probe"] = probe_summary(output, log)
    report["report_seconds"] = {
        **{k: round(v, 2) for k, v in seconds.items()},
        "total": round(time.monotonic() - started, 2),
    }
    return report, images


def _cumulative(explained: list[float]) -> list[float]:
    total, out = 0.0, []
    for value in explained:
        total += value
        out.append(total)
    return out


def _pca_summary(pca: dict) -> dict:
    if not pca.get("k"):
        return {}
    explained = pca.get("explained_variance") or []
    cumulative = _cumulative(explained)
    return {
        "k": pca["k"],
        "variance_target": pca.get("variance_target"),
        "variance_explained": pca.get("variance_explained"),
        "explained_variance_k": explained[: pca["k"]],
        "cumulative_at": {
            str(n): cumulative[n - 1]
            for n in (1, 2, 5, 10, 20, 50, 100, 200)
            if n <= len(cumulative)
        },
    }


def error_summary(errors: list[str], top: int = TOP_ERRORS) -> dict:
    """Failed files grouped by reason (memory addresses and the like folded together)."""
    reasons = Counter(re.sub(r"0x[0-9a-fA-F]+", "0x...", reason) for reason in errors)
    ranked = sorted(reasons.items(), key=lambda item: (-item[1], item[0]))[:top]
    return {
        "failed": len(errors),
        "distinct_reasons": len(reasons),
        "top_reasons": [{"reason": reason, "count": count} for reason, count in ranked],
    }


def class_summary(paths: Any, labels: Any) -> dict:
    """Images per class, by split folder when the paths have Training/Test folders."""
    from featurizer.reporting import probe

    split = probe.folder_split(paths) if len(paths) else None
    names = ["other" if split else "all"] * len(paths)
    if split is not None:
        for name, rows in (("Training", split.train), ("Test", split.test)):
            for row in rows:
                names[row] = name
    per_class: dict[str, dict[str, int]] = {}
    for label, name in zip(labels, names):
        parts = per_class.setdefault(label, {})
        parts[name] = parts.get(name, 0) + 1
    totals = sorted(sum(parts.values()) for parts in per_class.values())
    if not totals:
        return {"count": 0, "per_class": {}}
    return {
        "count": len(totals),
        "min": totals[0],
        "max": totals[-1],
        "median": totals[len(totals) // 2],
        "imbalance": totals[-1] / totals[0],
        "per_class": dict(sorted(per_class.items())),
    }


def probe_summary(output: Any, log: Callable[[str], None]) -> dict:
    """The linear probe from `pca` and from `features` on one split."""
    from featurizer.reporting import probe

    chosen = probe.Settings()
    settings: dict[str, Any] = {"solver": "L-BFGS-B", **asdict(chosen)}
    paths, labels = output.paths[output.vector_rows], output.labels[output.vector_rows]
    settings["rows"] = len(labels)
    if len(set(labels.tolist())) < 2:
        return {
            **settings,
            "split": None,
            "results": {},
            "skipped": "the probe needs featurized images of at least 2 classes",
        }
    split = probe.choose_split(paths, labels, seed=chosen.seed)
    if len(split.test) == 0:
        return {
            **settings,
            "split": split.method,
            "results": {},
            "skipped": "no class has enough images to hold some out for testing",
        }
    results = {}
    for name, matrix in (("pca", output.pca), ("features", output.features)):
        if matrix is None:
            continue
        result = probe.run_probe(name, matrix, labels, split, chosen)
        log(
            f"probe from {name}: test accuracy {result.test_accuracy:.1%} "
            f"({result.train_rows:,} train / {result.test_rows:,} test rows, "
            f"{result.iterations} iterations, {result.seconds:.1f} s)"
        )
        results[name] = result.to_dict(WORST_CLASSES)
    return {**settings, "split": split.method, "results": results}
