# Amazon EMR on EKS (emr-on-eks/, docker/emr-on-eks.Dockerfile, featurizer submit emr).
# See emr-on-eks/README.md.
#   make emr-image     the job image FROM the EMR release's Spark image (EMR_BASE_IMAGE)
#   make emr-push      ECR login, tag and push (needs AWS credentials; EMR_ECR_REPO)
#   make emr-submit    featurizer submit emr $(EMR_ARGS) --wait
#   make emr-test      hadolint, the image built FROM a local stand-in of the EMR base,
#                      the job run in it with spark-submit (Spark 3.5), checked (run by CI)
#   make emr-render    re-render emr-on-eks/*.json and pod templates from the code
EMR_RELEASE ?= emr-7.13.0
EMR_BASE_IMAGE ?= public.ecr.aws/emr-on-eks/spark/$(EMR_RELEASE):latest
EMR_VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
EMR_IMAGE ?= featurizer-emr:$(EMR_VERSION)
EMR_CONTEXT := .build/emr
EMR_STANDIN ?= featurizer-emr-standin:spark-3.5.6
EMR_TEST_IMAGE ?= featurizer-emr:standin
# e.g. EMR_ECR_REPO=123456789012.dkr.ecr.eu-west-1.amazonaws.com/featurizer-emr
EMR_ECR_REPO ?=
EMR_ARGS ?=

.PHONY: emr-context emr-image emr-push emr-submit emr-lint emr-standin emr-test emr-render

emr-context: venv  ## fill the build context of docker/emr-on-eks.Dockerfile
	bash hack/emr-context.sh $(EMR_CONTEXT)

emr-image: emr-context  ## the EMR on EKS image FROM the release's Spark image (EMR_BASE_IMAGE)
	bash hack/docker-build.sh $(EMR_IMAGE) venv -f docker/emr-on-eks.Dockerfile \
	  --build-arg BASE_IMAGE=$(EMR_BASE_IMAGE) $(EMR_CONTEXT)

# The registry host is the part of EMR_ECR_REPO before the first '/'.
emr-push:  ## ECR login, tag and push (EMR_ECR_REPO; needs AWS credentials)
	@test -n "$(EMR_ECR_REPO)" || { echo "emr-push: set EMR_ECR_REPO=<account>.dkr.ecr.<region>.amazonaws.com/<repo>"; exit 2; }
	aws ecr get-login-password --region $(word 4,$(subst ., ,$(EMR_ECR_REPO))) \
	  | docker login --username AWS --password-stdin $(firstword $(subst /, ,$(EMR_ECR_REPO)))
	docker tag $(EMR_IMAGE) $(EMR_ECR_REPO):$(EMR_VERSION)
	docker push $(EMR_ECR_REPO):$(EMR_VERSION)

emr-submit: venv  ## featurizer submit emr $(EMR_ARGS) --wait
	$(BIN)/featurizer submit emr --wait $(EMR_ARGS)

emr-lint: venv  ## hadolint the EMR Dockerfiles
	$(BIN)/hadolint docker/emr-on-eks.Dockerfile docker/emr-standin.Dockerfile
	@echo "emr-lint: hadolint clean"

emr-standin: venv  ## the local stand-in of the EMR base image
	bash hack/docker-up.sh
	bash hack/emr-standin.sh $(EMR_STANDIN)

emr-test: emr-lint emr-standin emr-context  ## the EMR image built FROM the stand-in, the job run in it (CI)
	bash hack/docker-build.sh $(EMR_TEST_IMAGE) venv -f docker/emr-on-eks.Dockerfile \
	  --build-arg BASE_IMAGE=$(EMR_STANDIN) $(EMR_CONTEXT)
	EMR_IMAGE=$(EMR_TEST_IMAGE) EMR_BASE_IMAGE=$(EMR_STANDIN) \
	  timeout 1800 $(BIN)/pytest tests/emr_image -v

emr-render: venv  ## re-render emr-on-eks/*.json and pod templates from the code
	$(BIN)/python -c 'from pathlib import Path; from featurizer.launch.emr_spec import render_files; \
	  print(*render_files(Path("emr-on-eks")), sep="\n")'

CI_TARGETS += emr-test
