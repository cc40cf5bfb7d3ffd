"""Packed input: `featurizer pack` shards, and runs over them give the loose files' results."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from featurizer import pipeline
from featurizer.config import RunConfig
from featurizer.errors import ConfigError

BIN = Path(sys.executable).parent


def _rows(output: Path) -> dict[str, tuple[str, np.ndarray]]:
    table = pq.read_table(output / "features").to_pandas()
    return {
        path: (label, np.asarray(vector, np.float32))
        for path, label, vector in zip(table["path"], table["label"], table["features"])
    }


@pytest.fixture(scope="module")
def images(sample_dir, tmp_path_factory) -> Path:
    """The sample plus a truncated JPEG, so that a shard holds a broken image too."""
    folder = tmp_path_factory.mktemp("loose") / "in"
    subprocess.run(["cp", "-r", str(sample_dir), str(folder)], check=True)
    jpeg = next(folder.rglob("*.jpg")).read_bytes()
    (folder / "Training" / "Broken").mkdir()
    (folder / "Training" / "Broken" / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 3])
    return folder


@pytest.fixture(scope="module")
def packed(images, tmp_path_factory) -> Path:
    shards = tmp_path_factory.mktemp("packed") / "shards"
    result = subprocess.run(
        [
            str(BIN / "featurizer"),
            "pack",
            str(images),
            str(shards),
            "--images-per-file",
            "30",
            "--master",
            "local[2]",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (
        "packed 101 images" in result.stdout and "into 4 Parquet files of up to 30" in result.stdout
    ), result.stdout
    return shards


def test_pack_writes_shards_of_the_chosen_size_with_paths_and_labels(packed, images):
    files = sorted(packed.glob("*.parquet"))
    sizes = [pq.ParquetFile(path).metadata.num_rows for path in files]
    assert sum(sizes) == 101 and max(sizes) <= 30 and len(files) == 4
    summary = json.loads((packed / "_pack.json").read_text())
    assert summary["images"] == 101 and summary["shards"] == 4
    table = pa.concat_tables(pq.read_table(path) for path in files).to_pandas()
    loose = {f"file:{path}": path.parent.name for path in images.rglob("*.jpg")}
    assert dict(zip(table["path"], table["label"])) == loose
    one = table.iloc[0]
    assert bytes(one["content"]) == Path(one["path"].removeprefix("file:")).read_bytes()


def test_packed_input_gives_the_loose_files_features_and_errors(spark, images, packed, tmp_path):
    config = {"pca_k": 4, "max_error_rate": 0.05, "no_report": True}
    loose = pipeline.run(
        RunConfig(input=str(images), output=str(tmp_path / "loose"), **config), spark=spark
    )
    shards = pipeline.run(
        RunConfig(input=str(packed), output=str(tmp_path / "packed"), files_per_batch=60, **config),
        spark=spark,
    )
    a, b = _rows(tmp_path / "loose"), _rows(tmp_path / "packed")
    assert a.keys() == b.keys() and len(a) == 100
    assert all(a[path][0] == b[path][0] for path in a)  # labels
    assert max(float(np.max(np.abs(a[path][1] - b[path][1]))) for path in a) == 0.0
    errors = [pq.read_table(tmp_path / name / "errors").to_pylist() for name in ("loose", "packed")]
    assert errors[0] == errors[1] and len(errors[0]) == 1  # the same reason
    assert errors[0][0]["path"].endswith("/Broken/cut.jpg")
    assert (shards["counts"]["found"], shards["counts"]["failed"]) == (101, 1)
    assert loose["counts"]["found"] == 101


def test_columns_of_another_layout_are_options(spark, sample_dir, tmp_path):
    """A Hugging Face style export: image = {bytes, path}, an integer class label."""
    files = sorted(sample_dir.rglob("*.jpg"))[:40]
    classes = sorted({path.parent.name for path in files})
    table = pa.table(
        {
            "image": [{"bytes": path.read_bytes(), "path": str(path)} for path in files],
            "class": [classes.index(path.parent.name) for path in files],
        }
    )
    (tmp_path / "hf").mkdir()
    pq.write_table(table, tmp_path / "hf" / "train-00000-of-00001.parquet")
    manifest = pipeline.run(
        RunConfig(
            input=str(tmp_path / "hf"),
            output=str(tmp_path / "out"),
            pca_k=2,
            no_report=True,
            content_column="image.bytes",
            path_column="image.path",
            label_column="class",
        ),
        spark=spark,
    )
    assert manifest["counts"]["featurized"] == 40
    rows = pq.read_table(tmp_path / "out" / "features").to_pandas()
    assert dict(zip(rows["path"], rows["label"])) == {
        str(path): str(classes.index(path.parent.name)) for path in files
    }
    with pytest.raises(ConfigError, match=r"has no column jpg: its columns are image, class"):
        pipeline.run(
            RunConfig(
                input=str(tmp_path / "hf"),
                output=str(tmp_path / "x"),
                content_column="jpg",
                path_column="image.path",
                label_column="class",
            ),
            spark=spark,
        )


def test_an_int8_engine_calibrates_on_the_packed_images(spark, packed, tmp_path):
    manifest = pipeline.run(
        RunConfig(
            input=str(packed),
            output=str(tmp_path / "int8"),
            precision="int8",
            pca_k=2,
            max_error_rate=0.05,
            no_report=True,
        ),
        spark=spark,
    )
    assert manifest["engine"]["precision"] == "int8"
    assert manifest["counts"]["featurized"] == 100
