"""Scheduled runs: each run of a ScheduledSparkApplication writes an output of its own."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def test_consecutive_scheduled_runs_each_write_their_own_output(sample_dir, tmp_path):
    """The chart's scheduled runs: --output .../{app} with the run's name as Spark's
    application name (the spark-operator passes `--name <schedule>-<timestamp>`), and
    --resume as the chart sets it. The second run must not find the first one's output."""
    template = f"{tmp_path}/features/{{app}}"
    for name in ("featurizer-1796000000", "featurizer-1796086400"):
        result = subprocess.run(
            [
                str(BIN / "featurizer"),
                "run",
                "--input",
                str(sample_dir),
                "--output",
                template,
                "--resume",
                "--limit",
                "10",
                "--pca-k",
                "2",
                "--no-report",
                "--master",
                "local[1]",
                "--conf",
                f"spark.app.name={name}",
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        manifest = json.loads((tmp_path / "features" / name / "manifest.json").read_text())
        assert manifest["output"] == f"file://{tmp_path}/features/{name}"
        assert manifest["parameters"]["output"] == template
        assert manifest["counts"]["featurized"] == 10
    assert sorted(path.name for path in (tmp_path / "features").iterdir()) == [
        "featurizer-1796000000",
        "featurizer-1796086400",
    ]
