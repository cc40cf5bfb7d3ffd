"""Awkward and broken input files in one real run: every file is accounted for.

Broken files land in errors/ with a reason, valid-but-awkward files are featurized, hidden
and non-image files are ignored, and found = featurized + failed.
"""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from featurizer import pipeline
from featurizer.config import RunConfig
from featurizer.errors import ConfigError


def _save(path: Path, image: Image.Image, fmt: str, **kwargs) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    path.write_bytes(buffer.getvalue())


def _gradient(size: tuple[int, int]) -> Image.Image:
    """Dark on the left, bright on the right."""
    row = np.linspace(0, 255, size[0], dtype=np.uint8)
    return Image.fromarray(np.stack([np.tile(row, (size[1], 1))] * 3, axis=-1))


def _photo(size=(100, 100)) -> Image.Image:
    rng = np.random.default_rng(sum(size))
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


GOOD = {  # relative path -> expected label
    "Gray/gray.jpg": "Gray",
    "Modes/cmyk.jpg": "Modes",
    "Modes/palette.png": "Modes",
    "Modes/rgba.png": "Modes",
    "Modes/gray16.png": "Modes",
    "Case/UPPER.JPG": "Case",
    "Case/Mixed.JpEg": "Case",
    "Sizes/tiny.png": "Sizes",
    "Sizes/large.jpg": "Sizes",
    "Exif/rotated.jpg": "Exif",
    "Exif/upright.jpg": "Exif",
    'Café Crème/it\'s "quoted" #1 %20.jpg': "Café Crème",
    "Nested/a/b/deep.jpg": "b",
}
BROKEN = {  # relative path -> the whole reason (a regular expression)
    "Broken/zero.jpg": r"empty file \(0 bytes\)",
    "Broken/truncated.jpg": r"OSError: image file is truncated \(\d+ bytes not processed\)",
    "Broken/text.jpg": r"UnidentifiedImageError: cannot identify image file",
    "Broken/random.jpg": r"UnidentifiedImageError: cannot identify image file",
    "Broken/bomb.png": r"image too large \(decompression bomb guard\): Image size \(120000000 "
    r"pixels\) exceeds limit of 89478485 pixels, could be decompression "
    r"bomb DOS attack\.",
}
IGNORED = ["Gray/.hidden.jpg", "Gray/notes.txt", "Gray/picture.gif"]


@pytest.fixture(scope="module")
def awkward(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("awkward") / "in"
    photo = _photo()
    _save(root / "Gray/gray.jpg", photo.convert("L"), "JPEG")
    _save(root / "Modes/cmyk.jpg", photo.convert("CMYK"), "JPEG")
    _save(root / "Modes/palette.png", photo.convert("P"), "PNG")
    _save(root / "Modes/rgba.png", photo.convert("RGBA"), "PNG")
    _save(
        root / "Modes/gray16.png",
        Image.fromarray(np.asarray(photo.convert("L"), np.uint16) * 257),
        "PNG",
    )
    _save(root / "Case/UPPER.JPG", photo, "JPEG")
    _save(root / "Case/Mixed.JpEg", photo, "JPEG")
    _save(root / "Sizes/tiny.png", _photo((7, 5)), "PNG")
    _save(root / "Sizes/large.jpg", _photo((6000, 4000)), "JPEG", quality=70)
    exif = Image.Exif()
    exif[0x0112] = 6
    # Stored sideways with "rotate 90 clockwise to display", and the same picture upright.
    _save(root / "Exif/rotated.jpg", _gradient((60, 100)), "JPEG", exif=exif)
    _save(
        root / "Exif/upright.jpg",
        _gradient((60, 100)).transpose(Image.Transpose.ROTATE_270),
        "JPEG",
    )
    _save(root / 'Café Crème/it\'s "quoted" #1 %20.jpg', photo, "JPEG")
    _save(root / "Nested/a/b/deep.jpg", photo, "JPEG")
    (root / "Broken").mkdir()
    (root / "Broken/zero.jpg").write_bytes(b"")
    jpeg = (root / "Case/UPPER.JPG").read_bytes()
    (root / "Broken/truncated.jpg").write_bytes(jpeg[: len(jpeg) // 3])
    (root / "Broken/text.jpg").write_text("hello, I am not a JPEG\n")
    (root / "Broken/random.jpg").write_bytes(np.random.default_rng(1).bytes(5000))
    # 12000 x 10000 = 120 MP: a few KB on disk, 360 MB once decoded as RGB.
    _save(root / "Broken/bomb.png", Image.new("1", (12000, 10000)), "PNG")
    for name in IGNORED:
        (root / name).write_bytes(jpeg)
    (root / "Empty Folder").mkdir()
    return root


@pytest.fixture(scope="module")
def outcome(spark, awkward, tmp_path_factory):
    output = tmp_path_factory.mktemp("awkward-out") / "run"
    manifest = pipeline.run(
        RunConfig(input=str(awkward), output=str(output), max_error_rate=0.5, pca_k=2), spark=spark
    )
    features = pq.read_table(output / "features").to_pandas()
    errors = pq.read_table(output / "errors").to_pandas()
    relative = lambda path: os.path.relpath(path.removeprefix("file:"), awkward)  # noqa: E731
    return (
        manifest,
        dict(zip(features["path"].map(relative), features["label"])),
        dict(zip(errors["path"].map(relative), errors["error"])),
        dict(zip(features["path"].map(relative), features["features"].map(np.asarray))),
    )


def test_found_is_featurized_plus_failed_file_by_file(outcome):
    manifest, good, broken, _ = outcome
    counts = manifest["counts"]
    assert counts["found"] == counts["featurized"] + counts["failed"]
    assert (counts["featurized"], counts["failed"]) == (len(GOOD), len(BROKEN))
    assert len(good) == len(GOOD) and len(broken) == len(BROKEN)


@pytest.mark.parametrize("name", sorted(GOOD))
def test_awkward_but_valid_files_are_featurized(outcome, name):
    _, good, _, _ = outcome
    assert good.get(name) == GOOD[name]


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_files_are_recorded_with_their_reason(outcome, name):
    _, _, broken, _ = outcome
    assert name in broken
    assert re.fullmatch(BROKEN[name], broken[name]), broken[name]


def test_exif_orientation_is_applied_before_featurizing(outcome):
    vectors = outcome[3]
    rotated, upright = vectors["Exif/rotated.jpg"], vectors["Exif/upright.jpg"]
    cosine = rotated @ upright / (np.linalg.norm(rotated) * np.linalg.norm(upright))
    assert cosine > 0.99, cosine  # sideways, the two are at about 0.75


def test_hidden_and_non_image_files_are_ignored(outcome):
    _, good, broken, _ = outcome
    for name in IGNORED:
        assert name not in good and name not in broken


def test_unwritable_output_fails_before_spark_work(spark, awkward, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError) as raised:
        pipeline.run(RunConfig(input=str(awkward), output=str(blocker / "out")), spark=spark)
    assert str(raised.value) == (
        f"output file://{blocker}/out is not writable: "
        f"Parent path is not a directory: file:{blocker}"
    )


def test_secrets_never_reach_the_manifest(spark, awkward, tmp_path):
    manifest = pipeline.run(
        RunConfig(
            input=str(awkward / "Modes"),
            output=str(tmp_path / "out"),
            pca_k=1,
            conf=(
                "spark.hadoop.fs.s3a.secret.key=SUPERSECRET-123",
                "spark.hadoop.fs.s3a.access.key=AKIAEXAMPLE",
            ),
        ),
        spark=spark,
    )
    text = (tmp_path / "out" / "manifest.json").read_text()
    assert "SUPERSECRET" not in text and "AKIAEXAMPLE" not in text
    assert "spark.hadoop.fs.s3a.secret.key=***" in json.loads(text)["parameters"]["conf"]
    assert manifest["counts"]["featurized"] == 4
