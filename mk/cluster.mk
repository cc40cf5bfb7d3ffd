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

cluster-up: venv  ## start the local single-node Kubernetes cluster (hack/cluster), image imported
	timeout 5400 $(CLUSTER) up

cluster-down:  ## stop it (built binaries and imported images stay cached)
	$(CLUSTER) down

# tests/cluster is outside plain `make test` (pyproject's norecursedirs); it needs the cluster.
cluster-e2e: venv  ## make image, cluster-up, tests/cluster inside the cluster, cluster-down
	$(MAKE) image IMAGE=$(CLUSTER_IMAGE)
	$(MAKE) cluster-up
	status=0; timeout 2700 $(CLUSTER) exec $(BIN)/pytest tests/cluster -v -s -p no:cacheprovider \
	    $(CLUSTER_E2E_ARGS) || status=$$?; \
	[ -n "$(CLUSTER_KEEP)" ] || $(CLUSTER) down; exit $$status

# Not in CI_TARGETS: on a fresh machine the Kubernetes, etcd and operator builds alone take
# ~26 min on the 2 shared cores (measured: kube 1256 s, etcd 85 s, spark-operator 239 s),
# plus ~2 min to import the image into containerd and ~17 min of e2e (8 of them the
# throughput run): ~45 min, too much beside make test, image-test, k8s-validate, emr-test.
# Cached (binaries and imported image kept), cluster-up takes ~15 s and cluster-e2e ~17 min.
