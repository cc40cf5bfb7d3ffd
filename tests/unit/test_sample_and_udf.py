import hashlib

import numpy as np
import pyarrow as pa

from featurizer import images, reading, sample_data, udf, vectors
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

    def predict(self, batch):
        self.batches.append(len(batch))
        if batch.dtype == np.uint8:  # decoded: preprocessed by the engine, as the real ones do
            batch = images.preprocess(batch)
        return np.tile(batch.mean(axis=(1, 2)), (1, 1280 // 3 + 1))[:, :1280]


def test_featurize_contents_batches_and_records_errors(tmp_path):
    sample_data.generate(tmp_path)
    files = [p.read_bytes() for p in sorted(tmp_path.rglob("*.jpg"))[:5]]
    predictor = MeanColour()
    features, errors = udf.featurize_contents(
        files[:2] + [b"junk"] + files[2:], predictor, batch_size=2
    )
    assert predictor.batches == [2, 2, 1]  # junk left out: batches of good images
    assert [error is None for error in errors] == [True, True, False, True, True, True]
    assert "UnidentifiedImageError" in errors[2]
    assert features.null_count == 1 and not features[2].is_valid
    # Staged as float32 bytes: they read back as the predictor's vectors, row for row.
    staged = vectors.unpack(features.filter(features.is_valid()), 1280)
    decoded, _ = images.decode_many(files)
    np.testing.assert_array_equal(staged, MeanColour().predict(images.preprocess(decoded)))
    assert features[0].as_py() == vectors.pack(staged[0])


def _files_batch(paths, contents=None):
    columns = {
        "path": [f"file:{path}" for path in paths],
        "label": [path.parent.name for path in paths],
        "length": [path.stat().st_size if path.exists() else 0 for path in paths],
        "modificationTime": pa.array([0] * len(paths), pa.timestamp("us", "UTC")),
    }
    if contents is not None:
        columns["content"] = pa.array(contents, pa.binary())
    return pa.RecordBatch.from_pydict(columns)


def read_here(batch, predictor):
    """featurize_batch over a batch whose files the worker reads (FileReader, local)."""
    [(batch, reads)] = reading.FileReader().ahead(iter([batch]))
    return udf.featurize_batch(batch, predictor, batch_size=64, reads=reads)


def test_a_batch_read_by_the_worker_stages_what_the_jvm_read_content_gives(tmp_path):
    sample_data.generate(tmp_path)
    paths = sorted(tmp_path.rglob("*.jpg"))[:4]
    read = read_here(_files_batch(paths), MeanColour())
    given = udf.featurize_batch(
        _files_batch(paths, [p.read_bytes() for p in paths]), MeanColour(), batch_size=64
    )
    assert read.equals(given)
    assert read.schema.names == list(udf.STAGED_COLUMNS)
    assert read.column(5).null_count == 4  # no errors


def test_files_gone_or_unreadable_become_error_rows_not_task_failures(tmp_path):
    sample_data.generate(tmp_path)
    good, gone, folder = sorted(tmp_path.rglob("*.jpg"))[0], tmp_path / "gone.jpg", tmp_path
    rows = read_here(_files_batch([good, gone, folder]), MeanColour())
    errors = rows.column("error").to_pylist()
    assert errors[0] is None and rows.column("features")[0].is_valid
    assert errors[1] == udf.DISAPPEARED
    assert errors[2] == "file could not be read: Is a directory"
    assert rows.column("features").null_count == 2


def test_staged_binary_column_views_back_with_its_nulls_left_out():
    matrix = np.arange(12, dtype=np.float32).reshape(4, 3)
    column = vectors.as_binary(matrix, np.array([False, True, False, False]))
    assert column.to_pylist()[1] is None
    assert column.to_pylist()[2] == vectors.pack(matrix[2])
    np.testing.assert_array_equal(
        vectors.unpack(column.filter(column.is_valid()), 3), matrix[[0, 2, 3]]
    )
    np.testing.assert_array_equal(vectors.unpack(vectors.as_binary(matrix)), matrix)


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
