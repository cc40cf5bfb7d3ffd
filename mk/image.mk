# The container image (docker/): `make image`, `make image-test`. See docker/README.md.
IMAGE ?= featurizer:local
# No registry is reachable here: the default base is built from Debian packages by
# hack/base-image.sh. Real users: make image BASE_IMAGE=debian:bookworm-slim
BASE_IMAGE ?= featurizer-base:bookworm
IMAGE_TEST_ARGS ?=

.PHONY: image image-lint image-test

# IMAGE_BUILD_FLAGS=--no-cache for a cold build.
image: venv  ## the featurizer image (IMAGE, BASE_IMAGE; IMAGE_BUILD_FLAGS=--no-cache)
	IMAGE_BUILD_FLAGS="$(IMAGE_BUILD_FLAGS)" bash hack/build-image.sh $(IMAGE) $(BASE_IMAGE)

image-lint: venv  ## hadolint docker/Dockerfile
	$(BIN)/hadolint docker/Dockerfile
	@echo "image-lint: hadolint clean"

# tests/docker is outside plain `make test` (pyproject's norecursedirs); named here explicitly.
image-test: image-lint image  ## hadolint, make image, the containerized tests (tests/docker) (CI)
	IMAGE=$(IMAGE) timeout 1800 $(BIN)/pytest tests/docker -v -s $(IMAGE_TEST_ARGS)

CI_TARGETS += image-test
