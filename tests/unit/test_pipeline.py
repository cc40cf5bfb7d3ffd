from featurizer.pipeline import MIN_ROWS_PER_OUTPUT_FILE, ROWS_PER_OUTPUT_FILE, output_files


def test_output_files_give_every_core_a_file_unless_files_get_too_small():
    assert output_files(4_000, cores=2) == 2
    assert output_files(MIN_ROWS_PER_OUTPUT_FILE, cores=8) == 1
    assert output_files(1, cores=8) == 1
    assert output_files(3 * MIN_ROWS_PER_OUTPUT_FILE, cores=8) == 3


def test_output_files_stay_large_on_big_inputs():
    assert output_files(90_380, cores=2) == 5  # ceil(90,380 / 20,000)
    assert output_files(10 * ROWS_PER_OUTPUT_FILE, cores=4) == 10
    assert output_files(90_380, cores=64) == 64  # ~1,400 rows each, all cores write
