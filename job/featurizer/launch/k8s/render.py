"""The SparkApplication for a RunConfig, rendered by the helm chart (no cluster needed).

`helm template` of helm/featurizer with values derived from the RunConfig: the same template
`helm install` and k8s/ use, so there is one SparkApplication spec. The arguments it renders
must parse back to the RunConfig (`check_arguments`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from featurizer.config import RunConfig
from featurizer.errors import ConfigError

TEMPLATE = "templates/sparkapplication.yaml"
DEFAULT_NAMESPACE = "featurizer"
NAME_LENGTH = 50  # the chart's fullnameOverride maximum
PACKAGED_CHART = Path(__file__).resolve().parents[2] / "chart"  # package data (pyproject)
REPO = Path(__file__).resolve().parents[4]  # a checkout, for its pinned helm build


def camel(name: str) -> str:
    """RunConfig field -> chart value key (pca_k -> pcaK); the chart maps it back to --pca-k."""
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def job_values(config: RunConfig) -> dict[str, Any]:
    """The chart's `job` values for a RunConfig: every option, null where the job's default
    applies. Nulls also clear options a --values file set: the RunConfig alone decides."""
    values: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.metadata.get("action") == "append":
            values[camel(f.name)] = list(value)
        else:
            values[camel(f.name)] = None if value == f.default else value
    return values


def app_name(output: str) -> str:
    """The default SparkApplication name for an output: featurizer-<last folder>-<hash>.
    The same output always gets the same name, so a second submit finds the first run (and
    refuses to replace it while it runs); different outputs never share one."""
    from featurizer import storage

    uri = storage.normalize(output)
    digest = hashlib.sha256(uri.encode()).hexdigest()[:8]
    last = re.sub(r"[^a-z0-9]+", "-", uri.rstrip("/").rsplit("/", 1)[-1].lower()).strip("-")
    stem = f"featurizer-{last}"[: NAME_LENGTH - len(digest) - 1].rstrip("-")
    return f"{stem}-{digest}"


def chart_path(explicit: str | None = None) -> Path:
    """--chart, else FEATURIZER_CHART, else the chart installed with this package (the same
    version as the job it renders)."""
    chart = Path(explicit or os.environ.get("FEATURIZER_CHART") or PACKAGED_CHART)
    if not (chart / "Chart.yaml").is_file():
        raise ConfigError(
            f"helm chart not found at {chart}: pass --chart DIR (helm/featurizer "
            f"of a featurizer checkout) or set FEATURIZER_CHART"
        )
    return chart


def helm_binary(explicit: str | None = None) -> str:
    """--helm, else FEATURIZER_HELM, else helm on PATH, else the checkout's pinned build."""
    chosen = explicit or os.environ.get("FEATURIZER_HELM") or shutil.which("helm")
    if chosen:
        if not os.access(chosen, os.X_OK):
            raise ConfigError(f"helm binary {chosen} is not executable: fix --helm/FEATURIZER_HELM")
        return chosen
    tools = REPO / "hack" / "tools.sh"
    if tools.is_file():
        proc = subprocess.run(["bash", str(tools), "helm"], capture_output=True, text=True)
        if proc.returncode == 0:
            return proc.stdout.strip()
    raise ConfigError("helm not found: install helm 3, or set FEATURIZER_HELM to its path")


def helm_template(
    chart: Path,
    helm: str,
    *,
    release: str,
    namespace: str,
    values_files: Sequence[str | Path] = (),
    extra_values: dict | None = None,
    show_only: str | None = None,
) -> str:
    """`helm template` output; one-line ConfigError if helm rejects the values."""
    import yaml

    for path in values_files:
        if not Path(path).is_file():
            raise ConfigError(f"values file {path} not found")
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="featurizer-values-") as extra:
        yaml.safe_dump(extra_values or {}, extra)
        extra.flush()
        cmd = [helm, "template", release, str(chart), "--namespace", namespace]
        for path in [*values_files, extra.name]:
            cmd += ["--values", str(path)]
        cmd += ["--show-only", show_only] if show_only else []
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        message = " ".join(line.strip() for line in proc.stderr.splitlines() if line.strip())
        raise ConfigError(f"helm template {chart}: {message.removeprefix('Error: ')}")
    return proc.stdout


def render(
    config: RunConfig,
    *,
    name: str,
    namespace: str = DEFAULT_NAMESPACE,
    values_files: Sequence[str | Path] = (),
    chart: Path | None = None,
    helm: str | None = None,
) -> dict[str, Any]:
    """The SparkApplication for `config`, rendered by the chart (values files, then the job)."""
    import yaml

    overrides = {
        "fullnameOverride": name,
        "schedule": {"enabled": False},
        "job": job_values(config),
    }
    text = helm_template(
        chart or chart_path(),
        helm or helm_binary(),
        release=name,
        namespace=namespace,
        values_files=values_files,
        extra_values=overrides,
        show_only=TEMPLATE,
    )
    app = yaml.safe_load(text)
    check_arguments(app, config)
    return app


def check_arguments(app: dict[str, Any], config: RunConfig) -> None:
    """The rendered arguments must parse back to exactly `config` (chart and job in step)."""
    argv = [str(arg) for arg in app["spec"].get("arguments") or []]
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # argparse's usage text: not ours
            parsed = RunConfig.from_argv(argv)
    except (SystemExit, ConfigError):
        parsed = None
    if parsed != config:
        raise ConfigError(
            f"the chart rendered arguments {argv} that do not match the options "
            f"given: the chart and this featurizer ({config.__module__}) differ, "
            f"use the chart of the same version"
        )
