# Performance: one command, one printed table, JSON under bench/results/ (see BENCHMARKS.md).
# BENCH_ARGS="--images 2000 --scales 1000,4000" for a shorter run, "--quick" for a smoke run.
.PHONY: bench
BENCH_ARGS ?=

bench: venv  ## the benchmark table and bench/results/*.json (BENCH_ARGS='--quick')
	$(BIN)/python bench/run.py $(BENCH_ARGS)
