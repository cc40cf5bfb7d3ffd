"""File and folder names Hadoop paths mishandle, and symbolic links: every real file counts
once, with its exact path and label, or is an error with a reason; a link loop is refused."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from featurizer import pipeline
from featurizer.config import RunConfig
from featurizer.errors import ConfigError

BIN = Path(sys.executable).parent
# Every character class Hadoop's Path or Spark's listing treats specially, in a file name and
# in a folder name (which becomes the label).
ODD = {
    "colon": "12:30:01",
    "colon-lead": ":lead",
    "percent": "100%",
    "percent-hex": "a%41b",
    "percent-bad": "a%zzb",
    "hash": "take#2",
    "question": "why?",
    "bracket": "shot[1]",
    "brace": "set{a,b}",
    "star": "star*",
    "backslash": "back\\slash",
    "lead-space": " lead",
    "trail-space": "trail ",
    "newline": "new\nline",
    "tab": "tab\there",
    "equals": "k=v",
    "ampersand": "a&b;c",
    "plus": "a+b",
    "quotes": 'it\'s "q"',
    "unicode": "Café Crème 🍎",
    "combining": "e\u0301",
    "long": "L" * 240,
}


def _jpeg(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (40, 40, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG")
    return buffer.getvalue()


def _write(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_jpeg(seed))
    return path


@pytest.fixture(scope="module")
def odd_names(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """Folder `Names/` with one file per odd name, and one folder per odd name holding
    `x.jpg`; plus a file whose name is not valid UTF-8. Returns (root, path -> label)."""
    root = tmp_path_factory.mktemp("odd") / "in"
    expected = {}
    for seed, name in enumerate(ODD.values()):
        file = _write(root / "Names" / f"{name}.jpg", seed)
        expected[f"file:{file}"] = "Names"
        folder_file = _write(root / name / "x.jpg", 100 + seed)
        expected[f"file:{folder_file}"] = name
    bad = os.fsencode(root / "Names") + b"/latin1-caf\xe9.jpg"
    with open(bad, "wb") as handle:
        handle.write(_jpeg(999))
    return root, expected


def test_odd_names_are_featurized_with_exact_paths_and_labels(spark, odd_names, tmp_path):
    root, expected = odd_names
    manifest = pipeline.run(
        RunConfig(input=str(root), output=str(tmp_path / "out"), pca_k=2, max_error_rate=0.1),
        spark=spark,
    )
    rows = pq.read_table(tmp_path / "out" / "features").to_pandas()
    assert dict(zip(rows["path"], rows["label"])) == expected
    errors = pq.read_table(tmp_path / "out" / "errors").to_pandas()
    assert errors["path"].tolist() == [f"file:{root}/Names/latin1-caf\\xe9.jpg"]
    assert "not valid UTF-8" in errors["error"][0]
    counts = manifest["counts"]
    assert (counts["found"], counts["featurized"], counts["failed"]) == (
        len(expected) + 1,
        len(expected),
        1,
    )


def _links(root: Path) -> dict[str, str]:
    """A tree of links; returns the expected featurized path -> label."""
    real = _write(root / "Train" / "Apple" / "a.jpg", 1)
    _write(root / "Train" / "Pear" / "p.jpg", 2)
    outside = _write(root.parent / "elsewhere" / "Kiwi" / "k.jpg", 3)
    (root / "Aliases").mkdir()
    (root / "Aliases" / "Apple").symlink_to(root / "Train" / "Apple")  # a folder alias
    (root / "Train" / "Pear" / "again.jpg").symlink_to(real)  # a file alias
    (root / "Kiwi").symlink_to(outside.parent)  # a folder outside
    (root / "Train" / "Pear" / "k-link.jpg").symlink_to(outside)  # a file outside?
    return {
        f"file:{real}": "Apple",
        f"file:{root}/Train/Pear/p.jpg": "Pear",
        f"file:{root}/Kiwi/k.jpg": "Kiwi",
    }


def test_links_are_followed_and_every_real_file_counts_once(spark, tmp_path):
    root = tmp_path / "in"
    expected = _links(root)
    manifest = pipeline.run(
        RunConfig(input=str(root), output=str(tmp_path / "out"), pca_k=1), spark=spark
    )
    rows = pq.read_table(tmp_path / "out" / "features").to_pandas()
    # k-link.jpg and Kiwi/k.jpg are one real file outside the input: the path through the
    # folder link sorts first among two paths that both go through a link.
    assert dict(zip(rows["path"], rows["label"])) == expected
    assert manifest["counts"]["found"] == 3 and manifest["counts"]["aliases_skipped"] == 3
    assert (
        not (tmp_path / "out" / "errors").exists()
        or pq.read_table(tmp_path / "out" / "errors").num_rows == 0
    )


def test_a_link_loop_is_refused_in_one_line_before_spark_lists(spark, tmp_path):
    root = tmp_path / "in"
    _write(root / "LoopA" / "a.jpg", 1)
    _write(root / "LoopB" / "b.jpg", 2)
    (root / "LoopA" / "toB").symlink_to(root / "LoopB")
    (root / "LoopB" / "toA").symlink_to(root / "LoopA")
    with pytest.raises(ConfigError, match=r"LoopA/toB/toA -> .*LoopA leads back"):
        pipeline.run(RunConfig(input=str(root), output=str(tmp_path / "out")), spark=spark)
    assert not (tmp_path / "out").exists()
    # The command line: exit 2, one line, before any Spark work.
    result = subprocess.run(
        [str(BIN / "featurizer"), "run", "--input", str(root), "--output", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines() == [
        line for line in result.stderr.strip().splitlines() if line.startswith("featurizer:")
    ]
    assert "leads back into a folder above it" in result.stderr.strip().splitlines()[-1]


def test_pipes_broken_links_and_hidden_names_are_listed_as_spark_would(spark, tmp_path):
    """A named pipe or a broken link with an image name is an error with a reason, never read
    (a read of a pipe blocks until a writer comes); hidden names follow Spark's rule."""
    root = tmp_path / "in"
    expected = {
        f"file:{_write(root / 'Apple' / 'a.jpg', 1)}": "Apple",
        f"file:{_write(root / 'Apple' / '_year=2024.jpg', 2)}": "Apple",  # `=`: not hidden
        f"file:{_write(root / '_part=1' / 'b.jpg', 3)}": "_part=1",
    }
    _write(root / "_tmp" / "hidden.jpg", 4)
    _write(root / "Apple" / ".hidden.jpg", 5)
    pipe = root / "Apple" / "pipe.jpg"
    os.mkfifo(pipe)
    (root / "Apple" / "gone.jpg").symlink_to(root / "nowhere.jpg")
    # A reader blocked on the pipe gets end-of-file after 120 s: a regression fails, not hangs.
    unblock = threading.Timer(120, lambda: os.close(os.open(pipe, os.O_RDWR)))
    unblock.start()
    try:
        manifest = pipeline.run(
            RunConfig(input=str(root), output=str(tmp_path / "out"), pca_k=1, max_error_rate=1),
            spark=spark,
        )
    finally:
        unblock.cancel()
    rows = pq.read_table(tmp_path / "out" / "features").to_pandas()
    assert dict(zip(rows["path"], rows["label"])) == expected
    errors = pq.read_table(tmp_path / "out" / "errors").to_pandas()
    assert dict(zip(errors["path"], errors["error"])) == {
        f"file:{root}/Apple/pipe.jpg": "not a regular file (a pipe, socket or device)",
        f"file:{root}/Apple/gone.jpg": "broken link: its target does not exist",
    }
    assert (manifest["counts"]["found"], manifest["counts"]["failed"]) == (5, 2)
