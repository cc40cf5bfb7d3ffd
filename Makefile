# featurizer: `make run` and `make test` set everything up on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
ARGS ?=
PYTEST_ARGS ?=
SAMPLE := data/sample
SHARED := $(abspath ../shared)

# Offline MobileNetV2 weights beside the checkout (see README, "Weights").
ifneq ($(wildcard $(SHARED)/models/*.h5),)
export FEATURIZER_WEIGHTS_DIR ?= $(SHARED)/models
endif
ifneq ($(wildcard $(SHARED)/datasets/fruits360-subset),)
export FEATURIZER_FRUITS360 ?= $(SHARED)/datasets/fruits360-subset
endif

# Each area (image, k8s, emr, bench, ...) keeps its targets in mk/<area>.mk and appends the
# targets CI must run to CI_TARGETS.
CI_TARGETS :=
include $(sort $(wildcard mk/*.mk))

.PHONY: help venv run test ci lock clean

help:  ## this list: every target with the comment beside it in the Makefiles
	@grep -hE '^[a-z][a-z0-9-]*:.*## ' $(MAKEFILE_LIST) | sort | \
	  awk -F ':.*## ' '{ printf "  make %-18s %s\n", $$1, $$2 }'

$(VENV)/.installed: pyproject.toml constraints.txt hack/system-deps.sh
	bash hack/system-deps.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt -e '.[spark,cloud,dev]'
	touch $@

venv: $(VENV)/.installed  ## the .venv from constraints.txt (and Java 17, BLAS/LAPACK via apt as root)

$(SAMPLE)/.done: | venv
	$(BIN)/featurizer sample-data $(SAMPLE)
	touch $@

run: venv $(SAMPLE)/.done  ## featurize the synthetic sample into output/sample (ARGS='...' passes options)
	$(BIN)/featurizer run --input $(SAMPLE) --output output/sample --overwrite $(ARGS)

test: venv  ## the whole test suite (real Spark, weights, files, servers on 127.0.0.1)
	$(BIN)/pytest $(PYTEST_ARGS)

# Everything .ci/run checks beyond `make test` (see mk/*.mk).
ci: $(CI_TARGETS)  ## everything .ci/run checks beyond make test (CI_TARGETS)

# Re-pin constraints.txt from a fresh resolution of pyproject.toml's dependencies.
lock:  ## re-pin constraints.txt from a fresh resolution of pyproject.toml
	rm -rf /tmp/featurizer-lock && $(PYTHON) -m venv /tmp/featurizer-lock
	/tmp/featurizer-lock/bin/pip install -q '.[spark,cloud,dev]' 'pandas<3'
	{ sed -n '1,2p' constraints.txt; /tmp/featurizer-lock/bin/pip freeze --exclude featurizer; } > constraints.new
	mv constraints.new constraints.txt

clean:  ## remove output/, data/ and .venv
	rm -rf output data $(VENV)
