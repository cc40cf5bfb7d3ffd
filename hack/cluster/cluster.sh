#!/usr/bin/env bash
# A real single-node Kubernetes cluster with the kubeflow spark-operator, assembled from what
# the package registries provide (no node image, nothing pulled), for the SparkApplication e2e.
#
#   hack/cluster/cluster.sh up          start everything (idempotent; ~15 s once built)
#   hack/cluster/cluster.sh down        stop everything, remove the cluster's state
#   hack/cluster/cluster.sh status      processes and node
#   hack/cluster/cluster.sh exec CMD..  run CMD inside the cluster's network (KUBECONFIG set)
#   hack/cluster/cluster.sh kubectl ..  kubectl against the cluster
#
# Parts: kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kubectl and etcd
# built from their Go modules and the pause binary compiled from the Kubernetes release
# (hack/cluster/build.sh, cached); containerd, runc and the CNI plugins from Debian;
# certificates made here with openssl; the spark-operator controller and webhook as processes
# on the node (the controller runs spark-submit from .venv's pyspark, like the operator image
# runs its own Spark's); the image of `make image` imported into containerd.
#
# Network: every process runs in the network namespace `featurizer-cluster`, which has only a
# loopback interface. All servers listen on its 127.0.0.1 (ports cannot clash with anything on
# the host), and no packet can leave it: there is no route anywhere else. There is no pod
# network and no DNS: the CNI config is loopback-only and the MutatingAdmissionPolicy
# `host-network` puts every pod on the node's (the namespace's) network, with /etc/hosts
# entries for the API server's in-cluster names (kubernetes.default.svc, ...) -> 127.0.0.1,
# where it listens on 443. So pods reach the API server, the operator's webhook and the S3
# server at 127.0.0.1. The kubelet registers its node as 127.0.0.1 (--hostname-override),
# which makes 127.0.0.1 the IP of every pod. The API server insists on a service range:
# 198.18.0.0/24 (RFC 2544 benchmarking range), which nothing uses and nothing routes to.
#
# Must run as root (network namespace, cgroups, mounts). Knobs: FEATURIZER_CLUSTER_STATE
# (default /var/lib/featurizer-cluster), FEATURIZER_CLUSTER_CACHE (build.sh), IMAGE
# (default featurizer:local: imported when Docker has it).
set -euo pipefail
shopt -s inherit_errexit

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
LOG_PREFIX=cluster
# shellcheck source=hack/lib.sh
source "$REPO/hack/lib.sh"
CACHE=${FEATURIZER_CLUSTER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/featurizer-cluster}
STATE=${FEATURIZER_CLUSTER_STATE:-/var/lib/featurizer-cluster}
IMAGE=${IMAGE:-featurizer:local}
NETNS=featurizer-cluster
NETNS_PATH=/run/netns/$NETNS
PKI=$STATE/pki
LOGS=$STATE/logs
PIDS=$STATE/pids
CTR_SOCK=$STATE/containerd/containerd.sock
CTR_ROOT=$CACHE/containerd   # images survive `down`: the next `up` need not import them again
API=https://127.0.0.1   # port 443, where in-cluster clients expect it (see the policy)
SERVICE_CIDR=198.18.0.0/24
NODE=127.0.0.1
JOB_NAMESPACE=featurizer
OPERATOR_NAMESPACE=spark-operator
WEBHOOK=https://127.0.0.1:9443

in_ns() { nsenter --net="$NETNS_PATH" "$@"; }
kubectl() { in_ns "$KUBE_BIN/kubectl" --kubeconfig "$STATE/admin.kubeconfig" "$@"; }
ctr() { command ctr --address "$CTR_SOCK" --namespace k8s.io "$@"; }

binaries() { eval "$("$HERE/build.sh")"; }

# ---------------------------------------------------------------- processes --

pid_of() {  # the recorded pid of NAME if that process still runs
  local pid
  pid=$(cat "$PIDS/$1.pid" 2>/dev/null) || return 1
  [[ -n $pid && -d /proc/$pid ]] && grep -q "$(basename "$(cat "$PIDS/$1.cmd")")" "/proc/$pid/cmdline" 2>/dev/null &&
    echo "$pid"
}

start() {  # start NAME CMD...: a daemon inside the namespace; log and pid under $STATE
  local name=$1; shift
  pid_of "$name" >/dev/null && return 0
  mkdir -p "$LOGS" "$PIDS"
  echo "=== $(date -Is) $*" >>"$LOGS/$name.log"
  setsid nohup nsenter --net="$NETNS_PATH" "$@" >>"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! >"$PIDS/$name.pid"
  echo "$1" >"$PIDS/$name.cmd"
  # Until the background shell has exec'd the command, its pid shows another command line.
  for _ in $(seq 50); do pid_of "$name" >/dev/null && return 0; sleep 0.1; done
  die "$name did not start (log: $LOGS/$name.log)"
}

stop() {  # stop NAME: TERM, then KILL after 20 s
  local pid
  pid=$(pid_of "$1") || { rm -f "$PIDS/$1.pid"; return 0; }
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 40); do [[ -d /proc/$pid ]] || break; sleep 0.5; done
  [[ -d /proc/$pid ]] && kill -9 "$pid" 2>/dev/null || true
  rm -f "$PIDS/$1.pid"
}

wait_for() {  # wait_for WHAT SECONDS NAME|- CMD...: until CMD succeeds, while daemon NAME runs
  local what=$1 seconds=$2 name=$3 deadline=$((SECONDS + $2)); shift 3
  until "$@" >/dev/null 2>&1; do
    if [[ $name != - ]] && ! pid_of "$name" >/dev/null; then
      tail -n 40 "$LOGS/$name.log" >&2
      die "$name exited before $what was ready (log: $LOGS/$name.log)"
    fi
    if ((SECONDS >= deadline)); then
      [[ $name == - ]] || tail -n 40 "$LOGS/$name.log" >&2
      die "$what not ready after $seconds s$([[ $name == - ]] || echo " (log: $LOGS/$name.log)")"
    fi
    sleep 1
  done
}

https_ok() {  # https_ok URL CERT: a 200 from URL, authenticated with client certificate CERT
  in_ns curl -sf --max-time 5 --cacert "$PKI/ca.crt" --cert "$PKI/$2.crt" --key "$PKI/$2.key" "$1"
}

# ---------------------------------------------------------------- host setup --

packages() {
  local missing=()
  command -v containerd >/dev/null || missing+=(containerd)
  command -v runc >/dev/null || missing+=(runc)
  [[ -x /usr/lib/cni/loopback ]] || missing+=(containernetworking-plugins)
  command -v nsenter >/dev/null || missing+=(util-linux)
  command -v ip >/dev/null || missing+=(iproute2)
  command -v curl >/dev/null || missing+=(curl)
  command -v openssl >/dev/null || missing+=(openssl)
  command -v gcc >/dev/null || missing+=(gcc libc6-dev)
  ((${#missing[@]})) || return 0
  log "installing ${missing[*]} (apt)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends "${missing[@]}" >&2 ||
    { apt-get update -q >&2 && apt-get install -y -q --no-install-recommends "${missing[@]}" >&2; }
}

netns() {
  [[ -e $NETNS_PATH ]] || ip netns add "$NETNS"
  in_ns ip link set lo up
}

# -------------------------------------------------------------- certificates --

# sign NAME SUBJECT EXTENDED_KEY_USAGE [SUBJECT_ALT_NAMES]: a key and a certificate of our CA.
sign() {
  local ext="basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=$3\n"
  [[ -z ${4:-} ]] || ext+="subjectAltName=$4\n"
  openssl req -x509 -new -newkey rsa:2048 -nodes -sha256 -days 30 -subj "$2" \
    -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -keyout "$PKI/$1.key" -out "$PKI/$1.crt" \
    -config <(printf '[req]\ndistinguished_name=dn\n[dn]\n[ext]\n%b' "$ext") -extensions ext 2>/dev/null
}

pki() {
  [[ -s $PKI/.complete ]] && return 0
  rm -rf "$PKI" && mkdir -p "$PKI" && chmod 700 "$PKI"
  openssl req -x509 -new -newkey rsa:2048 -nodes -sha256 -days 30 -subj /CN=featurizer-cluster-ca \
    -keyout "$PKI/ca.key" -out "$PKI/ca.crt" -extensions ext -config <(printf '[req]\ndistinguished_name=dn\n[dn]\n[ext]\nbasicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\n') 2>/dev/null
  sign apiserver /CN=kube-apiserver serverAuth \
    "IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  sign apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" clientAuth
  sign admin "/O=system:masters/CN=featurizer-admin" clientAuth
  sign controller-manager /CN=system:kube-controller-manager clientAuth
  sign scheduler /CN=system:kube-scheduler clientAuth
  sign kubelet "/O=system:nodes/CN=system:node:$NODE" clientAuth
  sign kubelet-serving "/CN=$NODE" serverAuth "IP:127.0.0.1,DNS:localhost"
  # The operator runs as its own user with cluster-wide rights, like its chart's ClusterRoles.
  sign spark-operator "/O=system:masters/CN=spark-operator" clientAuth
  sign webhook /CN=spark-operator-webhook serverAuth "IP:127.0.0.1"
  # The operator reads only PKCS#1 ("RSA PRIVATE KEY") keys.
  openssl rsa -in "$PKI/webhook.key" -traditional -out "$PKI/webhook.key" 2>/dev/null
  openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
  openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  touch "$PKI/.complete"
}

kubeconfig() {  # kubeconfig NAME CERT: a kubeconfig for API with CERT's client certificate
  cat >"$STATE/$1.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: featurizer-cluster
  cluster:
    server: $API
    certificate-authority-data: $(base64 -w0 "$PKI/ca.crt")
users:
- name: $2
  user:
    client-certificate-data: $(base64 -w0 "$PKI/$2.crt")
    client-key-data: $(base64 -w0 "$PKI/$2.key")
contexts:
- name: featurizer-cluster
  context: {cluster: featurizer-cluster, user: $2, namespace: $JOB_NAMESPACE}
current-context: featurizer-cluster
EOF
  chmod 600 "$STATE/$1.kubeconfig"
}

# ----------------------------------------------------------- control plane --

control_plane() {
  start etcd "$ETCD_BIN/etcd" --name featurizer --data-dir "$STATE/etcd" \
    --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster featurizer=http://127.0.0.1:2380 --log-level warn \
    --unsafe-no-fsync  # a throw-away test cluster on a shared disk: speed over durability
  wait_for etcd 60 etcd in_ns curl -sf --max-time 5 http://127.0.0.1:2379/health

  start kube-apiserver "$KUBE_BIN/kube-apiserver" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port=443 \
    --etcd-servers=http://127.0.0.1:2379 \
    --service-cluster-ip-range="$SERVICE_CIDR" --endpoint-reconciler-type=none \
    --client-ca-file="$PKI/ca.crt" \
    --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
    --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" \
    --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority="$PKI/ca.crt" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
    --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
    --feature-gates=MutatingAdmissionPolicy=true \
    --runtime-config=admissionregistration.k8s.io/v1beta1=true \
    --profiling=false --v=1
  wait_for kube-apiserver 180 kube-apiserver https_ok "$API/readyz" admin

  start kube-controller-manager "$KUBE_BIN/kube-controller-manager" \
    --kubeconfig="$STATE/controller-manager.kubeconfig" \
    --authentication-kubeconfig="$STATE/controller-manager.kubeconfig" \
    --authorization-kubeconfig="$STATE/controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --leader-elect=false --use-service-account-credentials \
    --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
    --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
    --controllers='*,-endpoints-controller,-endpointslice-controller,-endpointslice-mirroring-controller' \
    --profiling=false --v=1
  # (No endpoints controllers: every pod IP is 127.0.0.1, which Endpoints may not hold.)
  start kube-scheduler "$KUBE_BIN/kube-scheduler" \
    --kubeconfig="$STATE/scheduler.kubeconfig" \
    --authentication-kubeconfig="$STATE/scheduler.kubeconfig" \
    --authorization-kubeconfig="$STATE/scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --leader-elect=false --profiling=false --v=1
}

# ------------------------------------------------------------------- node --

containerd_up() {
  mkdir -p "$STATE/containerd" "$STATE/cni" "$CTR_ROOT"
  cat >"$STATE/containerd/config.toml" <<EOF
version = 2
root = "$CTR_ROOT"
state = "$STATE/containerd/state"
[grpc]
  address = "$CTR_SOCK"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_cdi = false
  # Processes here lack CAP_SYS_RESOURCE: an oom_score_adj below containerd's own (such as
  # the sandbox's -998) cannot be set, so keep every container's at or above it.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$STATE/containerd/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$STATE/cni"
[plugins."io.containerd.internal.v1.opt"]
  path = "$STATE/containerd/opt"
EOF
  # No pod network: a loopback-only network, so the runtime reports its network ready while
  # only host-network pods (all of them, see the admission policy) can run.
  cat >"$STATE/cni/10-loopback.conflist" <<'EOF'
{"cniVersion": "0.4.0", "name": "loopback-only", "plugins": [{"type": "loopback"}]}
EOF
  start containerd "$(command -v containerd)" --config "$STATE/containerd/config.toml" --log-level warn
  wait_for containerd 60 containerd ctr version
}

pause_image() {
  ctr images ls -q | grep -qx "$PAUSE_IMAGE" && return 0
  docker_up
  # Docker keeps the image between clusters: importing it again would leave the old one dangling.
  if ! "$DOCKER" image inspect "$PAUSE_IMAGE" >/dev/null 2>&1; then
    log "building the sandbox image $PAUSE_IMAGE from the release's pause.c"
    tar -C "$PAUSE_BIN" -c pause |
      "$DOCKER" import --change 'ENTRYPOINT ["/pause"]' --change 'USER 65535:65535' - "$PAUSE_IMAGE" >/dev/null
  fi
  ctr_import "$PAUSE_IMAGE"
}

# Docker -> containerd. An import cut short (a killed run) can leave the cached image store
# damaged so that every later import fails (seen: "parent snapshot ... does not exist"). The
# store is only a cache of Docker's images: start containerd on an empty one, import again.
ctr_import() {
  local error
  error=$("$DOCKER" save "$1" | ctr images import - 2>&1 >/dev/null) && return 0
  log "importing $1 into containerd failed (${error##*$'\n'}); its image store is only a cache: emptying $CTR_ROOT and importing again"
  stop containerd
  rm -rf "$CTR_ROOT"
  containerd_up
  [[ $1 == "$PAUSE_IMAGE" ]] || "$DOCKER" save "$PAUSE_IMAGE" | ctr images import - >/dev/null
  "$DOCKER" save "$1" | ctr images import - >/dev/null
}

docker_up() { "$DOCKER" info >/dev/null 2>&1 || bash "$REPO/hack/docker-up.sh" >&2; }

# The job's image, imported from Docker unless containerd already has this very image (its
# Docker image id is recorded next to containerd's store).
job_image() {
  local id ref stamp=$CTR_ROOT/.imported-${IMAGE//[^a-zA-Z0-9._-]/_}
  docker_up
  if ! id=$("$DOCKER" image inspect -f '{{.Id}}' "$IMAGE" 2>/dev/null); then
    log "image $IMAGE not in Docker: pods of the job cannot start until it is imported (make image, then cluster.sh up)"
    return 0
  fi
  ref=$IMAGE
  [[ $ref == */* ]] || ref=docker.io/library/$ref
  if [[ $(cat "$stamp" 2>/dev/null) == "$id" ]] && ctr images ls -q | grep -qx "$ref"; then
    return 0
  fi
  log "importing $IMAGE into containerd ($("$DOCKER" image inspect -f '{{.Size}}' "$IMAGE" | numfmt --to=iec))"
  local old
  old=$(cat "$stamp" 2>/dev/null || true)
  ctr_import "$IMAGE"
  echo "$id" >"$stamp"
  # The replaced image's last reference (its id): without it containerd frees its layers.
  [[ -z $old || $old == "$id" ]] || ctr images rm "$old" >/dev/null 2>&1 || true
}

kubelet_up() {
  mkdir -p "$STATE/kubelet"
  cat >"$STATE/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
tlsCertFile: $PKI/kubelet-serving.crt
tlsPrivateKeyFile: $PKI/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
containerRuntimeEndpoint: unix://$CTR_SOCK
cgroupDriver: cgroupfs
# This machine runs cgroup v1, which kubelet 1.34 still supports when told so.
failCgroupV1: false
failSwapOn: false
resolvConf: /etc/resolv.conf
podLogsDir: $STATE/pod-logs
maxPods: 20
serializeImagePulls: false
# The imported images must never be garbage-collected (they cannot be pulled back), and a
# shared disk's free percentage must not evict the test's pods.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 200Mi, nodefs.available: 1Gi, imagefs.available: 1Gi}
EOF
  start kubelet "$KUBE_BIN/kubelet" --config="$STATE/kubelet/config.yaml" \
    --kubeconfig="$STATE/kubelet.kubeconfig" --hostname-override="$NODE" \
    --root-dir="$STATE/kubelet" --v=1
  wait_for "node $NODE Ready" 180 kubelet kubectl wait --for=condition=Ready "node/$NODE" --timeout=5s
}

# --------------------------------------------------------------- cluster objects --

policies() {
  kubectl apply --server-side --force-conflicts -f - >/dev/null <<'EOF'
# This cluster has neither a pod network nor DNS: every pod uses the node's network (its
# 127.0.0.1), where the API server listens on 443 under its in-cluster names.
apiVersion: admissionregistration.k8s.io/v1beta1
kind: MutatingAdmissionPolicy
metadata: {name: host-network}
spec:
  failurePolicy: Fail
  reinvocationPolicy: Never
  matchConstraints:
    resourceRules:
    - {apiGroups: [""], apiVersions: [v1], operations: [CREATE], resources: [pods]}
  variables:
  - name: alias  # the API server's in-cluster names
    expression: >-
      {"ip": dyn("127.0.0.1"), "hostnames": dyn(["kubernetes", "kubernetes.default",
       "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"])}
  mutations:
  - patchType: ApplyConfiguration
    applyConfiguration:
      expression: >-
        Object{spec: Object.spec{hostNetwork: true, dnsPolicy: "Default"}}
  - patchType: JSONPatch  # (hostAliases' hostnames are atomic: no ApplyConfiguration)
    jsonPatch:
      expression: >-
        has(object.spec.hostAliases)
        ? [JSONPatch{op: "add", path: "/spec/hostAliases/-", value: variables.alias}]
        : [JSONPatch{op: "add", path: "/spec/hostAliases", value: [variables.alias]}]
---
apiVersion: admissionregistration.k8s.io/v1beta1
kind: MutatingAdmissionPolicyBinding
metadata: {name: host-network}
spec:
  policyName: host-network
EOF
  kubectl create namespace "$JOB_NAMESPACE" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  kubectl create namespace "$OPERATOR_NAMESPACE" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
}

operator_crds() {
  local crds
  crds=$(dirname "$(bash "$REPO/hack/tools.sh" crd)")
  kubectl apply --server-side --force-conflicts -f "$crds" >/dev/null
  # (kubectl wait errs instead of waiting while a new CRD has no status yet: hence the retry)
  wait_for "the spark-operator CRDs" 60 - kubectl wait --for=condition=Established --timeout=10s \
    crd/sparkapplications.sparkoperator.k8s.io crd/scheduledsparkapplications.sparkoperator.k8s.io
}

# The webhook's certificate in the Secret the operator reads in its cert-manager mode (it then
# leaves the webhook configurations alone), and configurations that call it at 127.0.0.1:9443
# with our CA: what the operator's chart renders, with a URL instead of its Service.
webhook_objects() {
  local ca webhooks="" kind path
  kubectl apply --server-side --force-conflicts -f - >/dev/null <<EOF
apiVersion: v1
kind: Secret
metadata: {name: spark-operator-webhook-certs, namespace: $OPERATOR_NAMESPACE}
type: kubernetes.io/tls
data:
  ca.crt: $(base64 -w0 "$PKI/ca.crt")
  tls.crt: $(base64 -w0 "$PKI/webhook.crt")
  tls.key: $(base64 -w0 "$PKI/webhook.key")
EOF
  ca=$(base64 -w0 "$PKI/ca.crt")
  hook() {  # hook NAME PATH GROUP VERSION RESOURCE OPERATIONS [OBJECT_SELECTOR]
    printf -- '- name: %s.sparkoperator.k8s.io
  admissionReviewVersions: [v1]
  sideEffects: None
  failurePolicy: Fail
  timeoutSeconds: 10
  clientConfig: {url: "%s%s", caBundle: %s}
  namespaceSelector:
    matchExpressions:
    - {key: kubernetes.io/metadata.name, operator: In, values: [%s]}
  rules:
  - {apiGroups: ["%s"], apiVersions: [%s], resources: [%s], operations: [%s]}
%s' "$1" "$WEBHOOK" "$2" "$ca" "$JOB_NAMESPACE" "$3" "$4" "$5" "$6" "${7:-}"
  }
  for kind in mutate validate; do
    webhooks=$(hook "$kind-sparkoperator-k8s-io-v1beta2-sparkapplication" \
                 "/$kind-sparkoperator-k8s-io-v1beta2-sparkapplication" \
                 sparkoperator.k8s.io v1beta2 sparkapplications "CREATE, UPDATE"
               hook "$kind-sparkoperator-k8s-io-v1beta2-scheduledsparkapplication" \
                 "/$kind-sparkoperator-k8s-io-v1beta2-scheduledsparkapplication" \
                 sparkoperator.k8s.io v1beta2 scheduledsparkapplications "CREATE, UPDATE")
    if [[ $kind == mutate ]]; then
      webhooks+=$'\n'$(hook mutate--v1-pod /mutate--v1-pod "" v1 pods CREATE \
        '  objectSelector: {matchLabels: {sparkoperator.k8s.io/launched-by-spark-operator: "true"}}')
      path=MutatingWebhookConfiguration
    else
      path=ValidatingWebhookConfiguration
    fi
    printf 'apiVersion: admissionregistration.k8s.io/v1\nkind: %s\nmetadata: {name: spark-operator-webhook}\nwebhooks:\n%s\n' \
      "$path" "$webhooks" | kubectl apply --server-side --force-conflicts -f - >/dev/null
  done
}

operator_up() {
  local spark_home
  spark_home=$("$REPO/.venv/bin/python" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))') ||
    die "no pyspark in $REPO/.venv (the operator's spark-submit): run make venv"
  # GetMasterURL() of the operator reads the in-cluster variables for spark-submit's --master.
  (
    export KUBECONFIG=$STATE/spark-operator.kubeconfig SPARK_HOME=$spark_home
    export KUBERNETES_SERVICE_HOST=127.0.0.1 KUBERNETES_SERVICE_PORT=443
    start spark-operator-webhook "$OPERATOR_BIN/operator" webhook start \
      --namespaces="$JOB_NAMESPACE" --webhook-port=9443 --webhook-cert-dir="$STATE/webhook-certs" \
      --enable-cert-manager=true --webhook-secret-name=spark-operator-webhook-certs \
      --webhook-secret-namespace="$OPERATOR_NAMESPACE" --health-probe-bind-address=127.0.0.1:8082 \
      --metrics-bind-address=0 --leader-election=false
    start spark-operator-controller "$OPERATOR_BIN/operator" controller start \
      --namespaces="$JOB_NAMESPACE" --controller-threads=4 --enable-ui-service=false \
      --health-probe-bind-address=127.0.0.1:8081 --metrics-bind-address=0 --leader-election=false
  )
  wait_for "spark-operator webhook" 60 spark-operator-webhook in_ns curl -sf --max-time 5 http://127.0.0.1:8082/readyz
  wait_for "spark-operator controller" 60 spark-operator-controller in_ns curl -sf --max-time 5 http://127.0.0.1:8081/readyz
}

# ---------------------------------------------------------------- commands --

need_root() { [[ $(id -u) == 0 ]] || die "run as root (network namespace, cgroups, mounts)"; }

up() {
  local start=$SECONDS
  need_root
  if [[ -d $STATE ]]; then
    # Restarting components of a live cluster one by one mixes old and new credentials
    # (the kubelet then fails TLS against the API server): start from a clean state instead.
    log "a cluster is already up: taking it down first (built binaries and images stay cached)"
    down
  fi
  packages
  binaries
  PAUSE_IMAGE=registry.k8s.io/pause:$(cat "$PAUSE_BIN/version")
  mkdir -p "$STATE" && chmod 700 "$STATE"
  netns
  pki
  kubeconfig admin admin
  kubeconfig controller-manager controller-manager
  kubeconfig scheduler scheduler
  kubeconfig kubelet kubelet
  kubeconfig spark-operator spark-operator
  control_plane
  containerd_up
  pause_image
  job_image
  kubelet_up
  policies
  operator_crds
  webhook_objects
  operator_up
  log "up in $((SECONDS - start)) s: Kubernetes $("$KUBE_BIN/kubectl" version --client -o json | sed -n 's/.*"gitVersion": "\(.*\)".*/\1/p' | head -1), node $NODE Ready, spark-operator running"
  log "use it: hack/cluster/cluster.sh kubectl get pods -A   |   hack/cluster/cluster.sh exec bash"
}

down() {
  local name task
  need_root
  for name in spark-operator-controller spark-operator-webhook kubelet; do stop "$name"; done
  if pid_of containerd >/dev/null; then
    # Pods' containers and sandboxes, while containerd can still stop them.
    for task in $(ctr tasks ls -q 2>/dev/null); do ctr tasks kill -s KILL "$task" 2>/dev/null || true; done
    sleep 1
    for task in $(ctr tasks ls -q 2>/dev/null); do ctr tasks delete -f "$task" >/dev/null 2>&1 || true; done
    for task in $(ctr containers ls -q 2>/dev/null); do ctr containers delete "$task" >/dev/null 2>&1 || true; done
  fi
  for name in containerd kube-scheduler kube-controller-manager kube-apiserver etcd; do stop "$name"; done
  # Volumes the kubelet mounted and rootfs mounts of containerd, deepest first.
  if [[ -d $STATE ]]; then
    # (none: a cluster whose start failed early; grep's status must not end `down` here)
    findmnt -rn -o TARGET | { grep "^$STATE/" || true; } | sort -r |
      while read -r mount; do umount -l "$mount" || true; done
  fi
  for name in /sys/fs/cgroup/*/kubepods; do
    [[ -d $name ]] && find "$name" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
  [[ -e $NETNS_PATH ]] && ip netns delete "$NETNS"
  rm -rf "$STATE"
  log "down (images kept in $CTR_ROOT)"
}

status() {
  local name pid
  for name in etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet \
              spark-operator-webhook spark-operator-controller; do
    if pid=$(pid_of "$name"); then echo "$name: running (pid $pid)"; else echo "$name: stopped"; fi
  done
  [[ -e $NETNS_PATH && -s $STATE/admin.kubeconfig ]] || return 0
  binaries
  kubectl get nodes -o wide || true
}

main() {
  case ${1:-} in
    up) up ;;
    down) down ;;
    status) status ;;
    exec) shift; [[ -e $NETNS_PATH ]] || die "the cluster is not up: hack/cluster/cluster.sh up"
          binaries
          exec nsenter --net="$NETNS_PATH" env KUBECONFIG="$STATE/admin.kubeconfig" \
            KUBECTL="$KUBE_BIN/kubectl" PATH="$KUBE_BIN:$PATH" "$@" ;;
    kubectl) shift; binaries; kubectl "$@" ;;
    *) die "usage: cluster.sh up | down | status | exec CMD... | kubectl ARGS..." ;;
  esac
}

[[ ${BASH_SOURCE[0]} != "$0" ]] || main "$@"
