# Performance: one command, one printed table, JSON under bench/results/ (see BENCHMARKS.md).
# BENCH_ARGS="--images 2000 --scales 1000,4000" for a shorter run, "--quick" for a smoke run.
.PHONY: bench bench-listing bench-s3-end
BENCH_ARGS ?=
LISTING_ARGS ?=
S3_END_ARGS ?=

bench: venv  ## the benchmark table and bench/results/*.json (BENCH_ARGS='--quick')
	$(BIN)/python bench/run.py $(BENCH_ARGS)

# Writes up to 1M tiny files under $TMPDIR (~4 GB, deleted after); ~20 min on 2 cores.
bench-listing: venv  ## driver time and peak RSS of listing/bookkeeping at 20k/200k/1M files, no featurizing (LISTING_ARGS='--sizes 20000')
	$(BIN)/python bench/listing.py $(LISTING_ARGS)

bench-s3-end: venv  ## the driver's reads at the end of a run on S3 (moto on 127.0.0.1; S3_END_ARGS='--parts 96')
	$(BIN)/python bench/s3_end.py $(S3_END_ARGS)
