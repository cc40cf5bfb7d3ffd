"""Fixtures for the chart and submitter tests: chart paths, `helm template` (the pinned helm
binary is the shared `helm` fixture of tests/conftest.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "featurizer"
FIXTURES = Path(__file__).with_name("fixtures")


@pytest.fixture(scope="session")
def template(helm: str):
    """`helm template featurizer helm/featurizer ARGS` as a list of documents (must succeed)."""

    def run(*args: str, namespace: str = "featurizer") -> list[dict]:
        proc = subprocess.run(
            [helm, "template", "featurizer", str(CHART), "--namespace", namespace, *args],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]

    return run
