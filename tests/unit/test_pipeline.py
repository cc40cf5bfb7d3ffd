import numpy as np

from featurizer.pipeline import (
    MIN_ROWS_PER_OUTPUT_FILE,
    ROWS_PER_OUTPUT_FILE,
    StreamStats,
    _gathered,
    output_files,
)
from featurizer.reduce import Moments


def test_output_files_give_every_core_a_file_unless_files_get_too_small():
    assert output_files(4_000, cores=2) == 2
    assert output_files(MIN_ROWS_PER_OUTPUT_FILE, cores=8) == 1
    assert output_files(1, cores=8) == 1
    assert output_files(3 * MIN_ROWS_PER_OUTPUT_FILE, cores=8) == 3


def test_output_files_stay_large_on_big_inputs():
    assert output_files(90_380, cores=2) == 5  # ceil(90,380 / 20,000)
    assert output_files(10 * ROWS_PER_OUTPUT_FILE, cores=4) == 10
    assert output_files(90_380, cores=64) == 64  # ~1,400 rows each, all cores write


def _stream(rows: int, resumed: int = 0) -> StreamStats:
    moments = Moments(4)
    moments.add_rows(np.arange(rows * 4, dtype=np.float32).reshape(rows, 4))
    return StreamStats(resumed=resumed, processed=rows, worker_rss_mb=0.0, moments=moments)


def test_the_tasks_sums_are_used_only_when_they_count_every_staged_row():
    assert _gathered(_stream(10), {"featurized": 10}) is not None
    # A resumed run: earlier attempts staged rows these tasks never saw.
    assert _gathered(_stream(6, resumed=4), {"featurized": 10}) is None
    assert _gathered(StreamStats(0, 10, 0.0), {"featurized": 10}) is None  # not gathered
