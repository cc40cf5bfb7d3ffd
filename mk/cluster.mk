# A real single-node Kubernetes cluster with the spark-operator (hack/cluster). See README,
# "A local cluster from packages".
#   make cluster-up     build the binaries once (cached), start the cluster, import the image
#   make cluster-e2e    make image, cluster-up, tests/cluster inside the cluster's network,
#                       then cluster-down (CLUSTER_KEEP=1 leaves it up)
#   make cluster-down   stop it and remove its state (built binaries and images stay cached)
CLUSTER_IMAGE ?= featurizer:local
CLUSTER_E2E_ARGS ?=
CLUSTER_KEEP ?=
CLUSTER := env IMAGE=$(CLUSTER_IMAGE) bash hack/cluster/cluster.sh

.PHONY: cluster-up cluster-e2e cluster-down

cluster-up: venv
	timeout 5400 $(CLUSTER) up

cluster-down:
	$(CLUSTER) down

# tests/cluster is outside plain `make test` (pyproject's norecursedirs); it needs the cluster.
cluster-e2e: venv
	$(MAKE) image IMAGE=$(CLUSTER_IMAGE)
	$(MAKE) cluster-up
	status=0; timeout 2700 $(CLUSTER) exec $(BIN)/pytest tests/cluster -v -p no:cacheprovider \
	    $(CLUSTER_E2E_ARGS) || status=$$?; \
	[ -n "$(CLUSTER_KEEP)" ] || $(CLUSTER) down; exit $$status
