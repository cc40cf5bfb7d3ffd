# Linters: part of the build, pinned in constraints.txt like every other tool (`make lint`).
# Shell scripts are found by their shebang, so a new script is linted without being listed.
SHELL_SCRIPTS = $(shell git grep -lI '^\#!.*\(bash\|sh\)$$')

.PHONY: lint

lint: venv  ## ruff (lint + format check), mypy on job/featurizer, shellcheck on every script, hadolint on every Dockerfile (CI)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/shellcheck -x -P SCRIPTDIR $(SHELL_SCRIPTS)
	$(BIN)/hadolint docker/Dockerfile docker/*.Dockerfile
	@echo "lint: clean"

# First in CI: a lint error fails in seconds, not after the test suite and the image builds.
CI_TARGETS := lint $(CI_TARGETS)
