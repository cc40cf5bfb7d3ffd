"""The report's pure parts, without Spark: splits, the probe, summaries, S3 settings, the page."""

from __future__ import annotations

import re

import numpy as np
import pytest

from featurizer import arrow_files, reporting
from featurizer.reporting import page, plots, probe, source


def blobs(
    classes: int = 6, per_class: int = 60, dim: int = 40, spread: float = 0.6, seed: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian blobs around random centres: a linear probe should separate them."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, dim)) * 2
    labels = np.repeat(np.array([f"class {i}" for i in range(classes)], dtype=object), per_class)
    x = centres[np.repeat(np.arange(classes), per_class)] + spread * rng.standard_normal(
        (classes * per_class, dim)
    )
    return x.astype(np.float32), labels


def test_folder_split_uses_the_folder_above_the_class():
    paths = [
        "s3a://b/fruits/Training/Apple Red 1/0_100.jpg",
        "file:/d/Test/Apple Red 1/1_100.jpg",
        "file:/d/training/Kiwi/2.jpg",
        "file:/d/Other/Kiwi/3.jpg",
        "file:/d/Test/x/Kiwi/4.jpg",
    ]  # "Test" but not above the class folder
    split = probe.folder_split(paths)
    assert split.train.tolist() == [0, 2] and split.test.tolist() == [1]
    assert split.method == "Training/Test folders"
    assert probe.folder_split(["file:/d/Training/Kiwi/0.jpg"]) is None  # no test side


def test_stratified_split_is_seeded_and_keeps_class_shares():
    labels = np.array(["a"] * 40 + ["b"] * 8 + ["c"], dtype=object)
    split = probe.stratified_split(labels, test_fraction=0.25, seed=3)
    again = probe.stratified_split(labels, test_fraction=0.25, seed=3)
    assert np.array_equal(split.train, again.train) and np.array_equal(split.test, again.test)
    assert not set(split.train) & set(split.test)
    assert len(split.train) + len(split.test) == len(labels)
    held = labels[split.test].tolist()
    assert held.count("a") == 10 and held.count("b") == 2 and held.count("c") == 0
    other = probe.stratified_split(labels, test_fraction=0.25, seed=4)
    assert not np.array_equal(split.test, other.test)
    assert probe.choose_split(["file:/x/a/1.jpg"] * len(labels), labels).method.startswith(
        "stratified 75%/25%"
    )


def test_cap_rows_keeps_every_class_in_proportion():
    labels = np.array(["a"] * 900 + ["b"] * 90 + ["c"] * 10, dtype=object)
    kept = probe.cap_rows(np.arange(1000), labels, 100)
    assert [labels[kept].tolist().count(c) for c in "abc"] == [90, 9, 1]
    assert probe.cap_rows(np.arange(50), labels, 100).tolist() == list(range(50))


def test_probe_separates_blobs_and_is_deterministic():
    x, labels = blobs()
    split = probe.stratified_split(labels, seed=0)
    first = probe.run_probe("pca", x, labels, split)
    second = probe.run_probe("pca", x, labels, split)
    assert first.test_accuracy >= 0.95, first.test_accuracy
    assert first.test_accuracy == second.test_accuracy
    assert first.train_rows == 270 and first.test_rows == 90
    summary = first.to_dict(worst=2)
    assert len(summary["worst_classes"]) == 2 and len(summary["per_class_accuracy"]) == 6
    assert summary["classes_evaluated"] == 6


def test_probe_is_at_chance_on_noise():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((600, 20)).astype(np.float32)
    labels = np.array([f"c{i % 4}" for i in range(600)], dtype=object)
    result = probe.run_probe("features", x, labels, probe.stratified_split(labels))
    assert result.test_accuracy < 0.4  # chance = 0.25: no leak from test


def test_standardize_uses_the_training_rows_statistics_and_keeps_constant_columns_at_zero():
    rng = np.random.default_rng(3)
    train = (rng.standard_normal((500, 6)) * [1, 10, 0.1, 3, 7, 1] + 50).astype(np.float32)
    train[:, 5] = 4.0  # constant
    test = rng.standard_normal((20, 6)).astype(np.float32)
    xs, ts = probe.standardize(train, test)
    mean, std = train.mean(axis=0, dtype=np.float64), train.std(axis=0, dtype=np.float64)
    np.testing.assert_allclose(xs[:, :5], (train[:, :5] - mean[:5]) / std[:5], atol=1e-4)
    np.testing.assert_allclose(ts[:, :5], (test[:, :5] - mean[:5]) / std[:5], atol=1e-4)
    assert xs.dtype == ts.dtype == np.float32 and not xs[:, 5].any()
    np.testing.assert_allclose(ts[:, 5], test[:, 5] - 4.0)  # centred, not divided by 0


def test_fit_softmax_matches_the_optimum_on_a_tiny_problem():
    """Gradient of the objective is ~0 at the returned weights (converged, right loss)."""
    x, labels = blobs(classes=3, per_class=30, dim=4, spread=2.0)
    y = np.array([int(label.split()[1]) for label in labels])
    (xs,) = probe.standardize(x)
    weights, bias, iterations, loss = probe.fit_softmax(
        xs, y, 3, probe.Settings(l2=0.1, max_iterations=2000, tolerance=1e-12)
    )
    logits = xs @ weights + bias
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    cross_entropy = -np.mean(np.log(p[np.arange(len(y)), y]))
    assert loss == pytest.approx(cross_entropy + 0.05 * np.sum(weights**2), rel=1e-5)
    assert 1 < iterations < 2000
    p[np.arange(len(y)), y] -= 1
    grad = xs.T @ p / len(y) + 0.1 * weights
    assert np.abs(grad).max() < 1e-3 and np.abs(p.sum(axis=0) / len(y)).max() < 1e-3


def test_per_class_accuracy_and_confusions():
    truth = np.array(["a", "a", "a", "a", "b", "b", "c"], dtype=object)
    predicted = np.array(["a", "b", "b", "c", "b", "b", "a"], dtype=object)
    rows = probe.per_class_accuracy(truth, predicted)
    assert [(r["label"], r["accuracy"]) for r in rows] == [("c", 0.0), ("a", 0.25), ("b", 1.0)]
    assert rows[1]["most_confused_with"] == "b" and rows[1]["confused_count"] == 2
    pairs = probe.confused_pairs(truth, predicted)
    assert pairs[0] == {"true": "a", "predicted": "b", "count": 2, "share_of_true": 0.5}
    assert len(pairs) == 3


def test_error_summary_folds_addresses_and_ranks():
    errors = [
        f"UnidentifiedImageError: cannot identify image file <_io.BytesIO object at 0x7f{i:04x}>"
        for i in range(3)
    ] + ["empty file"]
    summary = reporting.error_summary(errors)
    assert summary["failed"] == 4 and summary["distinct_reasons"] == 2
    assert summary["top_reasons"][0]["count"] == 3
    assert summary["top_reasons"][1] == {"reason": "empty file", "count": 1}


def test_class_summary_counts_each_class_per_training_test_split():
    paths = np.array(
        [
            "file:/d/Training/A/1.jpg",
            "file:/d/Training/A/2.jpg",
            "file:/d/Test/A/3.jpg",
            "file:/d/Training/B/4.jpg",
        ],
        dtype=object,
    )
    labels = np.array(["A", "A", "A", "B"], dtype=object)
    summary = reporting.class_summary(paths, labels)
    assert summary["per_class"] == {"A": {"Training": 2, "Test": 1}, "B": {"Training": 1}}
    assert (summary["min"], summary["max"], summary["imbalance"]) == (1, 3, 3.0)
    flat = reporting.class_summary(
        np.array(["/x/A/1.jpg"], dtype=object), np.array(["A"], dtype=object)
    )
    assert flat["per_class"] == {"A": {"all": 1}}


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, {}),
        (
            {"AWS_ENDPOINT_URL": "http://127.0.0.1:9000"},
            {"endpoint_override": "127.0.0.1:9000", "scheme": "http", "region": "us-east-1"},
        ),
        (
            {"AWS_ENDPOINT_URL_S3": "https://minio.local", "AWS_REGION": "eu-west-1"},
            {"endpoint_override": "minio.local", "scheme": "https", "region": "eu-west-1"},
        ),
    ],
)
def test_s3_options_follow_the_job_settings(env, expected):
    assert arrow_files.s3_options(env) == expected


def test_s3_options_prefer_the_runs_spark_settings():
    options = arrow_files.s3_options(
        {"AWS_ENDPOINT_URL": "http://127.0.0.1:1"},
        {"endpoint": "http://127.0.0.1:2", "access_key": "a", "secret_key": "s"},
    )
    assert options["endpoint_override"] == "127.0.0.1:2"
    assert (options["access_key"], options["secret_key"]) == ("a", "s")


def test_not_an_output_is_one_clear_error(tmp_path):
    from featurizer.errors import ConfigError

    with pytest.raises(ConfigError, match="no manifest.json: is it a featurizer output"):
        source.load(str(tmp_path))
    with pytest.raises(ConfigError, match="pyarrow reaches local paths and s3:// or s3a://"):
        arrow_files.locate("hdfs://namenode/out")


def test_the_scatter_is_a_png_for_many_classes():
    rng = np.random.default_rng(0)
    labels = np.array([f"class {i % 131}" for i in range(3000)], dtype=object)
    scatter = plots.pca_scatter_png(rng.standard_normal((3000, 5)), labels, [0.3, 0.2])
    assert scatter[:8] == b"\x89PNG\r\n\x1a\n" and len(scatter) > 10_000


def test_class_bars_are_rows_largest_first_stacked_by_split():
    per_class = {f"class {i}": {"Training": 40 - i % 7, "Test": 15} for i in range(131)}
    per_class["<b>odd</b>"] = {"Training": 100}
    html = page.class_bars(per_class)
    rows = re.findall(
        r"<tr><td>(.*?)</td><td class=n>(\d+)</td><td class=n>(\d+)</td>"
        r"<td class=n>(\d+)</td>",
        html,
    )
    assert len(rows) == 132
    assert rows[0] == ("&lt;b&gt;odd&lt;/b&gt;", "100", "0", "100")  # escaped, largest first
    assert rows[1] == ("class 0", "40", "15", "55")
    assert all(int(t) + int(s) == int(n) for _, t, s, n in rows)
    assert [int(n) for *_, n in rows] == sorted((int(n) for *_, n in rows), reverse=True)
    assert 'style="width:100.00%' in html and "<th>Training</th><th>Test</th>" in html


def test_class_bars_of_many_classes_keep_both_ends():
    per_class = {f"c{i:04d}": {"all": 1000 - i} for i in range(1000)}
    html = page.class_bars(per_class, limit=10)
    names = re.findall(r"<tr><td>(c\d+)</td>", html)
    assert names == ["c0000", "c0001", "c0002", "c0003", "c0004"] + [
        "c0995",
        "c0996",
        "c0997",
        "c0998",
        "c0999",
    ]
    assert "990 classes" in html and "<th>all</th>" not in html  # one split: no split columns


def test_page_escapes_names():
    report = {
        "generated_at": "now",
        "complete": True,
        "run": {"status": "succeeded", "output": "/o", "input": "/<i>", "counts": {}},
        "errors": {
            "failed": 1,
            "distinct_reasons": 1,
            "top_reasons": [{"reason": "<script>alert(1)</script>", "count": 1}],
        },
        "pca": {},
        "classes": {"count": 0, "per_class": {}},
        "probe": {"results": {}, "skipped": "needs 2 classes"},
    }
    html = page.render(report, {})
    assert "<script>" not in html and "&lt;script&gt;" in html and "/&lt;i&gt;" in html
    assert "needs 2 classes" in html


def test_load_reads_vectors_of_a_bounded_deterministic_sample(tmp_path):
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "features").mkdir()
    rows = 50
    for part in range(2):  # two files, several batches
        paths = [f"file:/in/C{i % 5}/{part}_{i}.jpg" for i in range(rows // 2)]
        pq.write_table(
            pa.table(
                {
                    "path": paths,
                    "label": [p.split("/")[-2] for p in paths],
                    "features": [np.full(1280, i, np.float32) for i in range(rows // 2)],
                    "pca": [np.full(3, part * 100 + i, np.float32) for i in range(rows // 2)],
                }
            ),
            tmp_path / "features" / f"part-{part}.parquet",
            row_group_size=7,
        )
    (tmp_path / "manifest.json").write_text(json.dumps({"status": "succeeded"}))

    def assert_own_rows(output):  # vectors belong to their own rows
        for row, path in enumerate(output.paths[output.vector_rows]):
            part, index = path.rsplit("/", 1)[1][:-4].split("_")
            assert output.pca[row, 0] == int(part) * 100 + int(index)
            assert output.features[row, 0] == int(index)

    output = source.load(str(tmp_path), max_vector_rows=10)
    assert len(output.paths) == rows and output.features.shape == (10, 1280)
    assert output.pca.shape == (10, 3)
    assert_own_rows(output)
    chosen = output.paths[output.vector_rows]
    again = source.load(str(tmp_path), max_vector_rows=10)
    assert list(again.paths[again.vector_rows]) == list(chosen)
    whole = source.load(str(tmp_path))  # every row: read in one pass
    assert len(whole.vector_rows) == rows and whole.features.shape == (rows, 1280)
    assert_own_rows(whole)
