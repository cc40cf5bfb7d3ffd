"""The user-facing commands, run as real processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

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


def test_exit_now_keeps_buffered_output_and_the_code():
    # Block-buffered into pipes (as for users: no PYTHONUNBUFFERED), then os._exit: what
    # was printed must still arrive.
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    script = (
        "import sys\n"
        "from featurizer.cli import exit_now\n"
        "print('summary ' * 2000)\n"
        "print('warning', file=sys.stderr)\n"
        "exit_now(3)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=environment
    )
    assert result.returncode == 3
    assert result.stdout == "summary " * 2000 + "\n"
    assert result.stderr == "warning\n"


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


def test_spark_submit_of_main_py_runs_the_job_with_its_options(sample_dir, tmp_path):
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


def one_line(result: subprocess.CompletedProcess) -> str:
    """The console's last line, minus the progress bar and the JVM's first-run notices."""
    lines = [
        line
        for line in result.stderr.splitlines()
        if line.startswith("featurizer: ")
        and not line.startswith(("featurizer: found ", "featurizer: first local run"))
        and "class-data archive" not in line
    ]
    return lines[-1] if lines else ""


@pytest.fixture(scope="module")
def complete_output(sample_dir, tmp_path_factory) -> Path:
    """A complete output of a real `featurizer run --no-report` (4 images)."""
    output = tmp_path_factory.mktemp("complete") / "out"
    result = featurizer(
        "run",
        "--input",
        str(sample_dir),
        "--output",
        str(output),
        "--limit",
        "4",
        "--pca-k",
        "2",
        "--no-report",
        "--master",
        "local[2]",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return output


def test_no_report_writes_no_report(complete_output):
    names = sorted(path.name for path in complete_output.iterdir())
    assert names == [
        "_SUCCESS",
        "errors",
        "explained_variance.png",
        "features",
        "manifest.json",
        "pca_model",
    ]


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(path.relative_to(folder)): (path.stat().st_mtime_ns, path.stat().st_size)
        for path in sorted(folder.rglob("*"))
    }


REFUSALS = [
    ("unknown option", "featurizer: error: unrecognized arguments: --no-such-option"),
    ("missing input", "featurizer: error: cannot read input file://{tmp}/nope: "),
    (
        "output inside the input",
        "featurizer: error: output file://{sample}/Training/out is inside the input "
        "file://{sample}: the run would read its own files; choose an output outside the "
        "input",
    ),
    (
        "input inside the output",
        "featurizer: error: input file://{sample}/Training is inside the output file://{sample}",
    ),
    ("overwrite and resume", "featurizer: error: --overwrite and --resume exclude each other"),
    (
        "resume a complete output",
        "featurizer: error: file://{complete} is already complete; use --overwrite to redo it",
    ),
    (
        "a complete output again",
        "featurizer: error: output file://{complete} is not empty; pass --overwrite to "
        "replace it (or --incremental to add new files)",
    ),
]


@pytest.mark.parametrize(("case", "expected"), REFUSALS, ids=[case for case, _ in REFUSALS])
def test_a_refused_run_exits_2_with_one_line_and_writes_nothing(
    case, expected, sample_dir, complete_output, tmp_path
):
    out = str(tmp_path / "out")
    args = {
        "unknown option": ["--input", str(sample_dir), "--output", out, "--no-such-option"],
        "missing input": ["--input", str(tmp_path / "nope"), "--output", out],
        "output inside the input": [
            "--input",
            str(sample_dir),
            "--output",
            str(sample_dir / "Training" / "out"),
        ],
        "input inside the output": [
            "--input",
            str(sample_dir / "Training"),
            "--output",
            str(sample_dir),
        ],
        "overwrite and resume": ["--input", str(sample_dir), "--output", out, "--overwrite"]
        + ["--resume"],
        "resume a complete output": ["--input", str(sample_dir), "--output", str(complete_output)]
        + ["--limit", "4", "--pca-k", "2", "--resume"],
        "a complete output again": ["--input", str(sample_dir), "--output", str(complete_output)]
        + ["--limit", "4", "--pca-k", "2"],
    }[case]
    inputs, complete = snapshot(sample_dir), snapshot(complete_output)
    result = featurizer("run", *args, "--master", "local[2]")
    message = expected.format(tmp=tmp_path, sample=sample_dir, complete=complete_output)
    assert result.returncode == 2, result.stderr[-3000:]
    assert one_line(result).startswith(message), result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "full log" not in result.stderr
    assert not (tmp_path / "out").exists()
    assert snapshot(sample_dir) == inputs  # no output folder made inside the input
    assert snapshot(complete_output) == complete


def test_one_image_fails_the_run_as_pca_needs_2(sample_dir, tmp_path):
    folder = tmp_path / "in" / "Kiwi"
    folder.mkdir(parents=True)
    shutil.copy(sorted(sample_dir.rglob("*.jpg"))[0], folder / "only.jpg")
    output = tmp_path / "out"
    result = featurizer(
        "run", "--input", str(tmp_path / "in"), "--output", str(output), "--master", "local[2]"
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert one_line(result).startswith(
        f"featurizer: error: only 1 image(s) could be featurized (PCA needs 2); see "
        f"file://{output}/errors (full log: "
    ), result.stderr[-3000:]
    assert not (output / "_SUCCESS").exists()
    manifest = json.loads((output / "manifest.json").read_text())
    assert manifest["status"] == "failed" and manifest["counts"]["featurized"] == 1


def test_a_failing_report_leaves_the_run_complete_and_says_how_to_retry(sample_dir, tmp_path):
    """The report comes after the commit: once `_SUCCESS` is there, report.json is made a
    folder (the report's first write then fails; it needs far longer than this poll to get
    there). The run still succeeds, with one warning naming the command to retry."""
    output = tmp_path / "out"
    process = subprocess.Popen(
        [
            str(BIN / "featurizer"),
            "run",
            "--input",
            str(sample_dir),
            "--output",
            str(output),
            "--limit",
            "4",
            "--pca-k",
            "2",
            "--master",
            "local[2]",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    while not (output / "_SUCCESS").exists():
        assert process.poll() is None, process.communicate()[1][-3000:]
        time.sleep(0.001)
    (output / "report.json").mkdir()
    (output / "report.json" / "in the way").write_text("")
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, err[-3000:]
    assert "featurizer run complete" in out
    warnings = [line for line in err.splitlines() if line.startswith("featurizer: warning: ")]
    assert len(warnings) == 1, err[-3000:]
    assert warnings[0].startswith("featurizer: warning: the report could not be written (")
    assert warnings[0].endswith(f"); retry with: featurizer report file://{output}")
    assert not (output / "report.html").exists()
    manifest = json.loads((output / "manifest.json").read_text())
    assert manifest["status"] == "succeeded" and manifest["counts"]["featurized"] == 4
