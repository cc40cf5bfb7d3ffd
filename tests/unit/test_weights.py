import pytest

from featurizer import weights
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
