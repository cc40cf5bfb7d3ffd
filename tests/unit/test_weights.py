from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from featurizer import images, weights
from featurizer.errors import ConfigError


def test_explicit_file_wins_and_is_hashed(no_top_weights):
    found = weights.resolve(str(no_top_weights))
    assert found.name == weights.NO_TOP_FILE
    assert found.sha256 == "4909c297c61699423d88e82610ff5a8b1eb63f6af7191b9b3adb58b8fbc24d98"


def test_offline_mirror_dir_is_used(monkeypatch, weights_dir):
    monkeypatch.delenv("FEATURIZER_WEIGHTS", raising=False)
    monkeypatch.setenv("FEATURIZER_WEIGHTS_DIR", str(weights_dir))
    assert weights.resolve("imagenet").path.parent == weights_dir.resolve()


def test_nothing_found_offline_says_how_to_provide(monkeypatch, tmp_path):
    monkeypatch.delenv("FEATURIZER_WEIGHTS", raising=False)
    monkeypatch.setenv("FEATURIZER_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(ConfigError, match="--weights"):
        weights.resolve("imagenet", download=False)


def test_missing_and_non_hdf5_files_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        weights.resolve(str(tmp_path / "nope.h5"))
    fake = tmp_path / "fake.h5"
    fake.write_bytes(b"not hdf5")
    with pytest.raises(ConfigError, match="HDF5"):
        weights.resolve(str(fake))


FULL_SHA256 = "d8866cfeb60537451d25caea6ea2ae9342cbd1cf52ff4a2a58d94a80c132e233"


@pytest.fixture(scope="module")
def fruit_batch(fruits360: Path) -> np.ndarray:
    """Two real photos, decoded and scaled as the job does."""
    files = sorted((fruits360 / "Training").rglob("*.jpg"))[:2]
    batch, errors = images.decode_many([path.read_bytes() for path in files])
    assert errors == [None, None]
    return images.preprocess(batch)


def test_full_imagenet_file_falls_back_to_the_same_1280_features(
    monkeypatch, tmp_path: Path, weights_dir: Path, no_top_weights: Path, fruit_batch: np.ndarray
) -> None:
    full = weights_dir / weights.FULL_FILE
    if not full.is_file():
        pytest.fail(f"the full (with top) MobileNetV2 weights are not in {weights_dir}")
    mirror = tmp_path / "mirror"  # a mirror holding only the full file
    mirror.mkdir()
    (mirror / weights.FULL_FILE).symlink_to(full)
    monkeypatch.delenv("FEATURIZER_WEIGHTS", raising=False)
    monkeypatch.setenv("FEATURIZER_WEIGHTS_DIR", str(mirror))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    found = weights.resolve("imagenet", download=False)
    assert (found.name, found.sha256) == (weights.FULL_FILE, FULL_SHA256)

    # The no-top model first: it takes Keras' first auto-generated pooling-layer name, so the
    # full model's pooling layer is numbered, as in any process that built a model before.
    expected = weights.build_model(no_top_weights)(fruit_batch, training=False).numpy()
    model = weights.build_model(found.path)
    assert model.output_shape == (None, weights.FEATURE_DIM)
    got = model(fruit_batch, training=False).numpy()
    assert got.shape == (2, weights.FEATURE_DIM) and np.abs(got).max() > 0.1
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
