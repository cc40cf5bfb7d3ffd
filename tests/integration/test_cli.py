"""The user-facing commands, run as real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from featurizer.config import RunConfig

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def featurizer(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "featurizer"), *args], capture_output=True, text=True, timeout=timeout
    )


# `featurizer run --help` run as the console script does, then what it imported: Spark and
# TensorFlow are imported inside the commands, never by the parser (so --help is instant).
HELP_IMPORTS = (
    "import io, json, sys, contextlib\n"
    "from featurizer import cli\n"
    "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
    "    try:\n"
    "        cli.main(['run', '--help'])\n"
    "    except SystemExit as exit:\n"
    "        code = exit.code\n"
    "heavy = sorted({name.split('.')[0] for name in sys.modules} & "
    "{'pyspark', 'py4j', 'tensorflow', 'keras', 'ai_edge_litert'})\n"
    "print(json.dumps({'code': code, 'heavy': heavy, 'help': out.getvalue()}))\n"
)


def test_help_imports_neither_spark_nor_tensorflow_and_documents_every_option():
    result = subprocess.run(
        [sys.executable, "-c", HELP_IMPORTS], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    help_run = json.loads(result.stdout)
    assert help_run["code"] == 0
    assert help_run["heavy"] == []
    for field in RunConfig.__dataclass_fields__:
        assert "--" + field.replace("_", "-") in help_run["help"]


def test_the_console_script_prints_the_help():
    result = featurizer("run", "--help")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("usage: featurizer run ")


def test_bad_option_is_one_clear_line():
    result = featurizer("run", "--input", "x", "--output", "y", "--pca-k", "0")
    assert result.returncode == 2
    assert result.stderr.strip() == "featurizer: error: --pca-k must be between 1 and 1280, got 0"


def test_run_prints_the_summary(sample_dir, tmp_path):
    output = tmp_path / "out"
    result = featurizer(
        "run", "--input", str(sample_dir), "--output", str(output), "--master", "local[2]"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for word in ("images", "classes", "pca k", "images/s", str(output)):
        assert word in result.stdout
    assert "100/100 images" in result.stderr  # the progress line
    manifest = json.loads((output / "manifest.json").read_text())
    assert manifest["counts"]["featurized"] == 100


def test_spark_submit_entry_point(sample_dir, tmp_path):
    output = tmp_path / "out"
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable}
    result = subprocess.run(
        [
            str(BIN / "spark-submit"),
            "--master",
            "local[2]",
            str(ROOT / "job" / "main.py"),
            "--input",
            f"file://{sample_dir}",
            "--output",
            str(output),
            "--limit",
            "12",
            "--pca-k",
            "4",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads((output / "manifest.json").read_text())
    assert manifest["counts"]["selected"] == 12 and manifest["pca"]["k"] == 4


def test_first_run_records_the_jvm_class_archive_and_later_runs_map_it(sample_dir, tmp_path):
    cache = tmp_path / "cache"
    args = ("run", "--input", str(sample_dir), "--limit", "20", "--pca-k", "2", "--no-report")
    env = {**os.environ, "FEATURIZER_CACHE": str(cache)}
    first = subprocess.run(
        [str(BIN / "featurizer"), *args, "--output", str(tmp_path / "a")],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert first.returncode == 0, first.stderr[-3000:]
    assert "records its classes at exit" in first.stderr
    archives = sorted((cache / "cds").iterdir())
    assert [p.suffix for p in archives] == [".jsa"], archives  # published, no .part left
    assert "archive saved to " + str(archives[0]) in first.stderr
    # -Xshare:on: a JVM that cannot map its archive refuses to start (so the run fails).
    second = subprocess.run(
        [str(BIN / "featurizer"), *args, "--output", str(tmp_path / "b")],
        capture_output=True,
        text=True,
        timeout=600,
        env={**env, "JAVA_TOOL_OPTIONS": "-Xshare:on"},
    )
    assert second.returncode == 0, second.stderr[-3000:]
    assert "records its classes" not in second.stderr
    assert sorted((cache / "cds").iterdir()) == archives
