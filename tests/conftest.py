"""Shared fixtures: the real weights, a real local Spark session, real sample runs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def _weights_dir() -> Path:
    folder = Path(os.environ.get("FEATURIZER_WEIGHTS_DIR", SHARED / "models"))
    if not (folder / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5").is_file():
        pytest.fail(f"MobileNetV2 weights not found in {folder}: set FEATURIZER_WEIGHTS_DIR")
    return folder


@pytest.fixture(scope="session", autouse=True)
def weights_dir() -> Path:
    folder = _weights_dir()
    os.environ["FEATURIZER_WEIGHTS_DIR"] = str(folder)
    return folder


@pytest.fixture(scope="session")
def no_top_weights(weights_dir: Path) -> Path:
    return weights_dir / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"


@pytest.fixture(scope="session")
def fruits360() -> Path:
    folder = Path(os.environ.get("FEATURIZER_FRUITS360", SHARED / "datasets" / "fruits360-subset"))
    if not (folder / "Training").is_dir():
        pytest.fail(f"Fruits-360 subset not found at {folder}: set FEATURIZER_FRUITS360")
    return folder


@pytest.fixture(scope="session")
def fruits360_run(spark, fruits360: Path, tmp_path_factory) -> tuple[Path, dict]:
    """One real run over the whole Fruits-360 subset (7,205 images, 131 classes; a few
    minutes on 2 cores), shared by every test that needs real features: (output, manifest)."""
    from featurizer import pipeline
    from featurizer.config import RunConfig

    output = tmp_path_factory.mktemp("fruits360") / "run"
    manifest = pipeline.run(RunConfig(input=str(fruits360), output=str(output)), spark=spark)
    return output, manifest


@pytest.fixture(scope="session")
def spark():
    """One real local Spark session for the integration tests (2 cores, like the machine)."""
    from featurizer import session
    from featurizer.config import RunConfig

    spark = session.create(RunConfig(input="unused", output="unused", master="local[2]"))
    yield spark
    spark.stop()


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory) -> Path:
    """The synthetic sample (100 images, class names with spaces)."""
    from featurizer import sample_data

    folder = tmp_path_factory.mktemp("sample")
    sample_data.generate(folder)
    return folder


def copy_tree(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target
