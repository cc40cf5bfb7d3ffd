"""`featurizer report` on a real run over the Fruits-360 subset, rendered in headless Chromium."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from featurizer import pipeline, reporting
from featurizer.config import RunConfig
from featurizer.errors import FeaturizerError

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
# Where the full-page screenshot goes: the test's temporary folder, unless a user who wants
# to look at it names a file here.
SCREENSHOT_ENV = "FEATURIZER_REPORT_SCREENSHOT"


@pytest.fixture(scope="module")
def written(fruits360_run) -> reporting.Written:
    output, _ = fruits360_run
    start = time.monotonic()
    result = reporting.write_report(None, str(output), log=print)
    print(f"report written in {time.monotonic() - start:.1f} s: {result.html_uri}")
    return result


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium, installed on first use (idempotent)."""
    subprocess.run(["bash", str(ROOT / "hack" / "chromium.sh")], check=True, timeout=900)
    return shutil.which("chromium")


def test_probe_separates_the_131_classes(written, fruits360_run):
    probe = written.report["probe"]
    assert probe["split"] == "Training/Test folders"
    pca, features = probe["results"]["pca"], probe["results"]["features"]
    print(
        f"probe test accuracy: pca {pca['test_accuracy']:.2%} (k = {pca['dim']}), "
        f"features {features['test_accuracy']:.2%}"
    )
    for result in (pca, features):
        assert (result["train_rows"], result["test_rows"]) == (5240, 1965)
        assert result["classes_evaluated"] == 131 and result["unseen_test_rows"] == 0
        assert len(result["worst_classes"]) == 10
        accuracies = [row["accuracy"] for row in result["worst_classes"]]
        assert accuracies == sorted(accuracies)
    assert pca["dim"] == fruits360_run[1]["pca"]["k"]
    assert pca["test_accuracy"] >= 0.93  # chance is 1/131
    assert features["test_accuracy"] >= 0.90


def test_report_json_describes_the_run(written, fruits360_run):
    output, manifest = fruits360_run
    on_disk = json.loads((output / "report.json").read_text())
    assert on_disk == json.loads(json.dumps(written.report))
    run = on_disk["run"]
    assert run["counts"] == manifest["counts"]
    assert {key: run["counts"][key] for key in ("found", "selected", "featurized", "failed")} == {
        "found": 7205,
        "selected": 7205,
        "featurized": 7205,
        "failed": 0,
    }
    assert run["versions"] == manifest["versions"] and run["weights"] == manifest["weights"]
    assert set(run["timings_s"]) >= {"featurize", "reduce", "total"}
    classes = on_disk["classes"]
    assert classes["count"] == 131 and classes["imbalance"] == 1.0
    assert all(parts == {"Training": 40, "Test": 15} for parts in classes["per_class"].values())
    assert on_disk["errors"] == {"failed": 0, "distinct_reasons": 0, "top_reasons": []}
    assert on_disk["pca"]["k"] == manifest["pca"]["k"]
    assert on_disk["complete"] is True


def test_html_is_one_self_contained_file(written, fruits360_run):
    html = (fruits360_run[0] / "report.html").read_text()
    sources = re.findall(r'<img src="([^"]{0,30})', html)
    assert len(sources) == 2 and all(s.startswith("data:image/png;base64,") for s in sources)
    run_chart = base64.b64encode((fruits360_run[0] / "explained_variance.png").read_bytes())
    assert run_chart.decode() in html  # the run's own chart, not drawn a second time
    assert not re.search(r'(src|href)="(https?:|//|file:)', html)
    for text in ("7,205", "Training/Test folders", "Worst 10 classes", "Apple Braeburn"):
        assert text in html


def test_html_renders_in_chromium(written, chromium, fruits360_run, tmp_path):
    from cdp_browser import Browser

    html = fruits360_run[0] / "report.html"
    target = Path(os.environ.get(SCREENSHOT_ENV) or tmp_path / "fruits360-report.png")
    target.parent.mkdir(parents=True, exist_ok=True)
    with Browser(chromium) as browser:
        browser.open(html.as_uri())
        images = browser.evaluate(
            "Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight])"
        )
        headings = browser.evaluate(
            "Array.from(document.querySelectorAll('h2')).map(h => h.textContent)"
        )
        shot = browser.screenshot(target)
        problems = browser.problems()
    print(f"screenshot: {shot}")
    assert problems == []
    assert len(images) == 2 and all(done and w > 300 and h > 200 for done, w, h in images)
    assert headings == ["The run", "PCA", "Quality: linear probe", "Classes"]
    from PIL import Image

    with Image.open(shot) as picture:
        assert picture.width == 1280 and picture.height > 2000
        pixels = np.asarray(picture.convert("L"))
        assert pixels.std() > 20  # not a blank page


def test_a_broken_page_is_noticed_by_the_browser_check(chromium, tmp_path):
    """The render check can fail: a missing image and a script error are both reported."""
    from cdp_browser import Browser

    page = tmp_path / "broken.html"
    page.write_text(
        '<html><body><img src="missing.png"><script>undefined_call()</script></body></html>'
    )
    with Browser(chromium) as browser:
        browser.open(page.as_uri())
        widths = browser.evaluate("Array.from(document.images).map(i => i.naturalWidth)")
        problems = browser.problems()
    assert widths == [0]
    assert any("undefined_call" in p for p in problems), problems
    assert any("missing.png" in p or "ERR_FILE_NOT_FOUND" in p for p in problems), problems


def test_cli_report_of_a_non_output_is_one_line(tmp_path):
    result = subprocess.run(
        [str(BIN / "featurizer"), "report", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"featurizer: error: file://{tmp_path} has no manifest.json: is it a featurizer "
        "output (the --output of a finished `featurizer run`)?"
    ]


def test_report_of_a_failed_run_shows_why(spark, sample_dir, tmp_path):
    """A run above --max-error-rate leaves errors/ and a failed manifest: the report says why."""
    data = tmp_path / "in"
    shutil.copytree(sample_dir / "Training" / "Banana", data / "Training" / "Banana")
    for i in range(3):
        (data / "Training" / "Banana" / f"bad{i}.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    (data / "Training" / "Banana" / "empty.jpg").write_bytes(b"")
    output = tmp_path / "out"
    with pytest.raises(FeaturizerError, match="could not be decoded"):
        pipeline.run(
            RunConfig(input=str(data), output=str(output), max_error_rate=0.01), spark=spark
        )
    written = reporting.write_report(spark, str(output))
    report = written.report
    assert report["run"]["status"] == "failed" and report["complete"] is False
    assert report["errors"]["failed"] == 4
    assert sum(r["count"] for r in report["errors"]["top_reasons"]) == 4
    assert report["probe"]["results"] == {}
    html = (output / "report.html").read_text()
    assert "failed" in html and "Why files failed" in html and "<img" not in html


def test_cli_report_reads_and_writes_s3(fruits360_run, written, moto, monkeypatch, tmp_path):
    """`featurizer report s3a://...` on the same output uploaded to S3 gives the same report:
    report.json beside it in the bucket, the page where --html says."""
    import boto3
    from pyarrow import fs

    s3_endpoint, env = moto.url, moto.env()
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    boto3.client("s3").create_bucket(Bucket="report-run")  # the shared server: its own bucket
    output, _ = fruits360_run
    s3 = fs.S3FileSystem(
        endpoint_override=s3_endpoint.split("://")[1], scheme="http", region="us-east-1"
    )
    for name in ("features", "errors", "manifest.json", "_SUCCESS"):
        fs.copy_files(
            str(output / name),
            f"report-run/fruits/{name}",
            source_filesystem=fs.LocalFileSystem(),
            destination_filesystem=s3,
        )
    page = tmp_path / "elsewhere" / "fruits.html"
    result = subprocess.run(
        [str(BIN / "featurizer"), "report", "s3a://report-run/fruits", "--html", str(page)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **env},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "probe from pca: test accuracy" in result.stdout
    assert f"wrote file://{page}\nwrote s3a://report-run/fruits/report.json" in result.stdout
    remote = json.loads(s3.open_input_stream("report-run/fruits/report.json").read())
    for name in ("pca", "features"):
        assert (
            remote["probe"]["results"][name]["test_accuracy"]
            == written.report["probe"]["results"][name]["test_accuracy"]
        )
    assert remote["run"] == written.report["run"] and remote["classes"] == written.report["classes"]
    assert page.read_text().count('<img src="data:image/png;base64,') == 2
    assert s3.get_file_info("report-run/fruits/report.html").type == fs.FileType.NotFound
