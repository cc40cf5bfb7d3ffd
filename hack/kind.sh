#!/usr/bin/env bash
# featurizer on a local kind cluster (the make targets kind-up ... kind-down call this).
#
#   hack/kind.sh up        create the kind cluster (hack/kind-config.yaml) and our namespace
#   hack/kind.sh load      load the image featurizer:<version> into the cluster's node
#   hack/kind.sh operator  helm install the kubeflow spark-operator, watching our namespace
#   hack/kind.sh operator-template   what `operator` installs, rendered (no cluster needed)
#   hack/kind.sh s3        MinIO in the cluster (hack/kind-s3.yaml), its Secret, the sample data
#   hack/kind.sh run       install our chart with values-kind.yaml, wait for COMPLETED, print
#                          the driver log tail and the output summary
#   hack/kind.sh down      delete the cluster
#
# Needs docker, kubectl and network access to Docker Hub (node and MinIO images) and ghcr.io
# (the operator image). kind itself is `go install`ed at the pinned version unless on PATH;
# helm and the operator's chart come from the Go module proxy (hack/tools.sh).
# Knobs: KIND, KUBECTL, PYTHON (a Python with featurizer + boto3: .venv/bin/python),
#        IMAGE (default featurizer:<version>), SAMPLE (default data/sample), RUN_TIMEOUT (s).
set -euo pipefail
shopt -s inherit_errexit

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LOG_PREFIX=kind.sh
# shellcheck source=hack/lib.sh
source "$REPO/hack/lib.sh"
KIND_VERSION=v0.33.0
SPARK_OPERATOR_VERSION=${FEATURIZER_SPARK_OPERATOR_VERSION:-v2.5.2}
CLUSTER=featurizer
CONTEXT=kind-$CLUSTER
NAMESPACE=featurizer
RELEASE=featurizer
BUCKET=featurizer
S3_HOST_ENDPOINT=http://127.0.0.1:30900     # hack/kind-config.yaml's port mapping
CACHE_DIR=${FEATURIZER_TOOLS_CACHE:-$FEATURIZER_CACHE}
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$REPO/pyproject.toml")
IMAGE=${IMAGE:-featurizer:$VERSION}
SAMPLE=${SAMPLE:-$REPO/data/sample}
RUN_TIMEOUT=${RUN_TIMEOUT:-1800}
KUBECTL=${KUBECTL:-kubectl}


helm() { "$(bash "$REPO/hack/tools.sh" helm)" --kube-context "$CONTEXT" "$@"; }
kubectl() { command "$KUBECTL" --context "$CONTEXT" "$@"; }

kind() {
  if [[ -z ${KIND:-} ]]; then
    KIND=$(command -v kind || true)
    if [[ -z $KIND ]]; then
      KIND=$CACHE_DIR/bin/kind-$KIND_VERSION/kind
      if [[ ! -x $KIND ]]; then
        log "building kind $KIND_VERSION from the Go module proxy"
        (cd / && GOBIN=$(dirname "$KIND") GOWORK=off CGO_ENABLED=0 go install "sigs.k8s.io/kind@$KIND_VERSION")
      fi
    fi
  fi
  command "$KIND" "$@"
}

cmd_up() {
  if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
    log "cluster $CLUSTER exists"
  else
    kind create cluster --config "$REPO/hack/kind-config.yaml" --wait 120s
  fi
  kubectl create namespace "$NAMESPACE" --dry-run=client -o yaml | kubectl apply -f -
}

cmd_load() {
  docker image inspect "$IMAGE" >/dev/null 2>&1 \
    || die "image $IMAGE not found: build it with make image IMAGE=$IMAGE"
  kind load docker-image "$IMAGE" --name "$CLUSTER"
}

operator_chart() {
  local dir
  dir=$(cd / && GOWORK=off go mod download -json "github.com/kubeflow/spark-operator/v2@$SPARK_OPERATOR_VERSION" \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')
  echo "$dir/charts/spark-operator-chart"
}

# The operator watches our namespace only; our chart brings the driver's service account
# and RBAC, so the operator chart's are off.
OPERATOR_VALUES=(--namespace spark-operator --set "spark.jobNamespaces={$NAMESPACE}"
                 --set spark.serviceAccount.create=false --set spark.rbac.create=false)

cmd_operator_template() {
  "$(bash "$REPO/hack/tools.sh" helm)" template spark-operator "$(operator_chart)" "${OPERATOR_VALUES[@]}"
}

cmd_operator() {
  helm upgrade --install spark-operator "$(operator_chart)" "${OPERATOR_VALUES[@]}" \
    --create-namespace --wait --timeout 10m
  kubectl wait --for=condition=Established crd/sparkapplications.sparkoperator.k8s.io --timeout=60s
}

secret_value() {
  kubectl get secret featurizer-s3 -n "$NAMESPACE" -o "jsonpath={.data.$1}" | base64 -d
}

# s3 ACTION ARGS: boto3 against the in-cluster server through the host port mapping.
s3() {
  AWS_ACCESS_KEY_ID=$(secret_value AWS_ACCESS_KEY_ID) \
  AWS_SECRET_ACCESS_KEY=$(secret_value AWS_SECRET_ACCESS_KEY) \
  "$PYTHON" - "$S3_HOST_ENDPOINT" "$BUCKET" "$@" <<'PY'
import json, pathlib, sys
import boto3

endpoint, bucket, action, *args = sys.argv[1:]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
if action == "upload":                      # upload FOLDER PREFIX
    folder, prefix = pathlib.Path(args[0]), args[1]
    if bucket not in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
        s3.create_bucket(Bucket=bucket)
    files = [p for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.startswith(".")]
    for path in files:
        s3.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(folder).as_posix()}")
    print(f"uploaded {len(files)} files to s3://{bucket}/{prefix}/")
elif action == "clear":                     # clear PREFIX
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=args[0] + "/")
    for page in pages:
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": keys})
elif action == "summary":                   # summary PREFIX
    from featurizer import report
    prefix = args[0]
    s3.head_object(Bucket=bucket, Key=f"{prefix}/_SUCCESS")
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=f"{prefix}/manifest.json")["Body"].read())
    print(report.summary_table(manifest))
PY
}

cmd_s3() {
  if ! kubectl get secret featurizer-s3 -n "$NAMESPACE" >/dev/null 2>&1; then
    kubectl create secret generic featurizer-s3 -n "$NAMESPACE" \
      --from-literal=AWS_ACCESS_KEY_ID="featurizer-$(openssl rand -hex 4)" \
      --from-literal=AWS_SECRET_ACCESS_KEY="$(openssl rand -hex 24)"
  fi
  kubectl apply -f "$REPO/hack/kind-s3.yaml"
  kubectl rollout status deployment/s3 -n "$NAMESPACE" --timeout=300s
  [[ -d $SAMPLE ]] || "$PYTHON" -m featurizer.cli sample-data "$SAMPLE"
  s3 upload "$SAMPLE" sample
}

cmd_run() {
  local status=0
  s3 clear output/sample
  # A fresh release is a fresh run (an upgrade with an unchanged spec would not rerun).
  helm uninstall "$RELEASE" --namespace "$NAMESPACE" --ignore-not-found --wait
  helm install "$RELEASE" "$REPO/helm/featurizer" --namespace "$NAMESPACE" \
    --values "$REPO/helm/featurizer/values-kind.yaml" \
    --set "image.repository=${IMAGE%:*}" --set "image.tag=${IMAGE##*:}"
  "$PYTHON" -m featurizer.cli status "$RELEASE" --namespace "$NAMESPACE" --context "$CONTEXT" \
    --wait --no-logs --wait-timeout "$RUN_TIMEOUT" || status=$?
  log "driver log (last 40 lines):"
  "$PYTHON" -m featurizer.cli logs "$RELEASE" --namespace "$NAMESPACE" --context "$CONTEXT" --tail 40 || true
  [[ $status -eq 0 ]] || die "the SparkApplication did not complete (exit $status)"
  s3 summary output/sample
}

cmd_down() {
  kind delete cluster --name "$CLUSTER"
}

case "${1:-}" in
  up|load|operator|s3|run|down) "cmd_$1" ;;
  operator-template) cmd_operator_template ;;
  *) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2; exit 2 ;;
esac
