import hashlib

import numpy as np
import pyarrow as pa

from featurizer import images, sample_data, udf, vectors
from featurizer.progress import Progress


def digest(folder):
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*.jpg")):
        h.update(str(path.relative_to(folder)).encode() + path.read_bytes())
    return h.hexdigest()


def test_sample_data_is_deterministic_and_in_fruits360_layout(tmp_path):
    assert sample_data.generate(tmp_path / "a") == 100
    sample_data.generate(tmp_path / "b")
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert len(list((tmp_path / "a" / "Training" / "Apple Red").glob("*.jpg"))) == 16


class MeanColour:
    """A real, deterministic predictor: the mean of each channel, tiled to 1280."""

    def __init__(self):
        self.batches = []

    def predict(self, images):
        self.batches.append(len(images))
        return np.tile(images.mean(axis=(1, 2)), (1, 1280 // 3 + 1))[:, :1280]


def test_featurize_contents_batches_and_records_errors(tmp_path):
    sample_data.generate(tmp_path)
    files = [p.read_bytes() for p in sorted(tmp_path.rglob("*.jpg"))[:5]]
    predictor = MeanColour()
    frame = udf.featurize_contents(files[:2] + [b"junk"] + files[2:], predictor, batch_size=2)
    assert predictor.batches == [2, 1, 2]  # junk skipped inside its batch
    assert frame["error"].isna().tolist() == [True, True, False, True, True, True]
    assert "UnidentifiedImageError" in frame["error"][2]
    assert frame["features"][2] is None
    # Staged as float32 bytes: they read back as the predictor's vectors, row for row.
    staged = vectors.unpack(pa.array(frame["features"].drop(index=2).tolist(), pa.binary()), 1280)
    decoded, _ = images.decode_many(files)
    np.testing.assert_array_equal(staged, MeanColour().predict(images.preprocess(decoded)))


def test_predictor_cache_builds_once_per_key():
    built = []
    build = lambda: built.append(1) or object()  # noqa: E731
    first = udf.cached_predictor("k1", build)
    assert udf.cached_predictor("k1", build) is first and len(built) == 1
    udf.cached_predictor("k2", build)
    assert len(built) == 2


def test_progress_line_shows_counts_and_rate():
    line = Progress("featurize", 200, lambda: 50).line()
    assert "50/200 images" in line and "img/s" in line
