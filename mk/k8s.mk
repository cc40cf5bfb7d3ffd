# Kubernetes (helm/featurizer, k8s/, hack/k8s.sh, hack/kind.sh). See README, "Kubernetes".
#   make k8s-validate    helm lint + kubeconform (Kubernetes and spark-operator CRD schemas),
#                        k8s/ in sync, bad values and a bad manifest rejected (run by CI)
#   make k8s-render      re-render k8s/ from the chart (K8S_DIR=... renders elsewhere)
#   make kind-up kind-load operator-install kind-s3 kind-run kind-down
#                        the job on a local kind cluster (needs Docker Hub access)
K8S_DIR ?= k8s
K8S_IMAGE ?= featurizer:$(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)

.PHONY: k8s-validate k8s-render kind-up kind-load operator-install kind-s3 kind-run kind-down

k8s-validate:  ## helm lint + kubeconform of every rendering, k8s/ in sync (CI)
	timeout 1200 bash hack/k8s.sh validate

k8s-render:  ## re-render k8s/ from the chart
	bash hack/k8s.sh render $(K8S_DIR)

kind-up:  ## a kind cluster (needs Docker Hub)
	bash hack/kind.sh up

# Builds the image under the tag the chart uses unless it exists (never :latest).
kind-load: venv  ## load the image into kind
	docker image inspect $(K8S_IMAGE) >/dev/null 2>&1 || $(MAKE) image IMAGE=$(K8S_IMAGE)
	IMAGE=$(K8S_IMAGE) bash hack/kind.sh load

operator-install:  ## the spark-operator chart into kind
	bash hack/kind.sh operator

kind-s3: venv $(SAMPLE)/.done  ## MinIO in kind with the sample
	PYTHON=$(BIN)/python SAMPLE=$(SAMPLE) bash hack/kind.sh s3

kind-run: venv  ## helm install with values-kind.yaml and wait
	PYTHON=$(BIN)/python IMAGE=$(K8S_IMAGE) bash hack/kind.sh run

kind-down:  ## delete the kind cluster
	bash hack/kind.sh down

CI_TARGETS += k8s-validate

# The chart's README (helm/featurizer/README.md) from values.yaml's `# --` comments and
# README.md.gotmpl, by helm-docs (built from the Go module proxy by hack/tools.sh).
.PHONY: chart-docs
chart-docs:  ## regenerate helm/featurizer/README.md from values.yaml (helm-docs)
	cd helm && $$(bash ../hack/tools.sh helm-docs) --chart-search-root featurizer \
	  --template-files README.md.gotmpl --sort-values-order file --log-level warning
