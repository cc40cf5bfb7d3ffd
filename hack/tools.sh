#!/usr/bin/env bash
# Pinned dev tools for featurizer, built from the Go module proxy and cached.
#
#   hack/tools.sh helm          path of a helm binary (go install, cached per version)
#   hack/tools.sh kubeconform   path of a kubeconform binary (same)
#   hack/tools.sh helm-docs     path of a helm-docs binary (same; the chart's README)
#   hack/tools.sh crd           path of the SparkApplication CRD YAML of the pinned
#                               kubeflow spark-operator (ScheduledSparkApplication and
#                               SparkConnect CRDs are next to it)
#   hack/tools.sh k8s-schemas   path of an offline kubeconform schema dir: built-in kinds
#                               of the pinned Kubernetes version (standalone and
#                               standalone-strict) plus the spark-operator CRD schemas
#   hack/tools.sh all           all of the above, one path per line
#   hack/tools.sh validate ARGS...
#                               run kubeconform fully offline against those schemas,
#                               e.g. hack/tools.sh validate -strict -summary manifests/
#
# Only paths go to stdout; progress goes to stderr. Nothing is fetched from
# GitHub: binaries are `go install`ed from module sources, the CRDs come out of
# the spark-operator Go module zip, and the Kubernetes OpenAPI spec out of the
# k8s.io/kubernetes module zip (api/openapi-spec/swagger.json).
#
# Knobs (environment):
#   FEATURIZER_TOOLS_CACHE             default $FEATURIZER_CACHE (~/.cache/featurizer)
#   FEATURIZER_HELM_VERSION            default v3.22.0
#   FEATURIZER_KUBECONFORM_VERSION     default v0.8.0
#   FEATURIZER_HELM_DOCS_VERSION       default v1.14.2
#   FEATURIZER_SPARK_OPERATOR_VERSION  default v2.5.2
#   FEATURIZER_K8S_VERSION             default v1.37.2 (k8s.io/kubernetes module version)
#   FEATURIZER_SPARKAPP_REFERENCE      reference openAPIV3Schema JSON to compare the CRD
#                                      with; default <repo>/../shared/schemas/sparkapplication_v1beta2.json
#   GO                                 go command (default: go on PATH, else /usr/local/go/bin/go)
set -euo pipefail
shopt -s inherit_errexit

HELM_VERSION=${FEATURIZER_HELM_VERSION:-v3.22.0}
KUBECONFORM_VERSION=${FEATURIZER_KUBECONFORM_VERSION:-v0.8.0}
HELM_DOCS_VERSION=${FEATURIZER_HELM_DOCS_VERSION:-v1.14.2}
SPARK_OPERATOR_VERSION=${FEATURIZER_SPARK_OPERATOR_VERSION:-v2.5.2}
K8S_VERSION=${FEATURIZER_K8S_VERSION:-v1.37.2}

HACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$HACK_DIR")
SPARKAPP_REFERENCE=${FEATURIZER_SPARKAPP_REFERENCE:-$REPO_DIR/../shared/schemas/sparkapplication_v1beta2.json}
CONVERTER=$HACK_DIR/openapi2jsonschema.py
LOG_PREFIX=tools.sh
# shellcheck source=hack/lib.sh
source "$HACK_DIR/lib.sh"
CACHE_DIR=${FEATURIZER_TOOLS_CACHE:-$FEATURIZER_CACHE}


go_cmd() {
  if [[ -z ${GO:-} ]]; then
    GO=$(command -v go || true)
    [[ -n $GO ]] || GO=/usr/local/go/bin/go
  fi
  [[ -x $GO ]] || die "no go command (looked on PATH and at /usr/local/go/bin/go; set GO=...)"
  # Run outside any module/workspace so the project's own go.mod (if any) is
  # neither consulted nor modified.
  (cd / && GOWORK=off GO111MODULE=on GOFLAGS=${GOFLAGS:--buildvcs=false} "$GO" "$@")
}

# Serialise concurrent runs that build the same thing (parallel CI steps).
with_lock() {
  local name=$1; shift
  mkdir -p "$CACHE_DIR/locks"
  if command -v flock >/dev/null 2>&1; then
    (flock 9; "$@") 9>"$CACHE_DIR/locks/$name.lock"
  else
    "$@"
  fi
}

# go mod download MODULE@VERSION; prints FIELD (Dir, GoMod, Origin.Hash) of its JSON answer.
mod_download() {
  local modver=$1 field=${2:-Dir} out
  out=$(go_cmd mod download -json "$modver" 2>&1) || true
  python3 -c '
import json, sys
field, modver = sys.argv[1], sys.argv[2]
raw = sys.stdin.read()
try:
    d = json.loads(raw)
except ValueError:
    sys.exit("go mod download %s: %s" % (modver, raw.strip()))
if d.get("Error"):
    sys.exit("go mod download %s: %s" % (modver, d["Error"]))
for part in field.split("."):
    d = d.get(part, {}) if isinstance(d, dict) else {}
print(d if isinstance(d, str) else "")
' "$field" "$modver" <<<"$out"
}

# ---------------------------------------------------------------- binaries --

# go_tool NAME MODULE/CMD VERSION CHECK LDFLAGS: the binary NAME, built once from the Go module
# proxy into $CACHE_DIR/bin/NAME-VERSION/ (complete only once it ran CHECK), path on stdout.
go_tool() {
  local name=$1 package=$2 version=$3 check=$4 ldflags=$5
  local dir=$CACHE_DIR/bin/$name-$version tmp
  # shellcheck disable=SC2086  # CHECK is a list of arguments
  if [[ -x $dir/$name ]] && "$dir/$name" $check >/dev/null 2>&1; then
    echo "$dir/$name"; return 0
  fi
  with_lock "$name-$version" build_go_tool "$name" "$package" "$version" "$check" "$ldflags"
  echo "$dir/$name"
}

build_go_tool() {
  local name=$1 package=$2 version=$3 check=$4 ldflags=$5
  local dir=$CACHE_DIR/bin/$name-$version tmp
  # shellcheck disable=SC2086
  [[ -x $dir/$name ]] && "$dir/$name" $check >/dev/null 2>&1 && return 0
  log "building $name $version from the Go module proxy (a few minutes on 2 cores, once)"
  mkdir -p "$CACHE_DIR/bin"
  tmp=$(mktemp -d "$CACHE_DIR/bin/.$name-XXXXXX")
  if ! GOBIN=$tmp CGO_ENABLED=0 go_cmd install -trimpath -ldflags "$ldflags" "$package@$version" >&2; then
    rm -rf "$tmp"; die "go install $package@$version failed"
  fi
  # shellcheck disable=SC2086
  "$tmp/$name" $check >/dev/null 2>&1 || { rm -rf "$tmp"; die "the built $name does not run"; }
  chmod 755 "$tmp"
  rm -rf "$dir" && mv "$tmp" "$dir"
  log "$name $version: $dir/$name"
}

# helm's Makefile stamps its version, and the Kubernetes version that `helm template` and
# `helm lint` assume is taken from the client-go it is built with (a plain `go install`
# would leave .Capabilities.KubeVersion at v1.20).
helm_ldflags() {
  local mod=$1 src cg minor commit
  src=$(mod_download "$mod@$HELM_VERSION" Dir)
  commit=$(mod_download "$mod@$HELM_VERSION" Origin.Hash)
  cg=$(awk '$1 == "k8s.io/client-go" && $2 ~ /^v0\./ {print $2; exit}' "$src/go.mod")
  minor=$(cut -d. -f2 <<<"${cg:-v0.20.0}")
  local ldflags="-w -s -X $mod/internal/version.version=$HELM_VERSION"
  # The proxy's .info for helm.sh carries no VCS origin, so the commit is usually unknown.
  [[ -z $commit ]] || ldflags+=" -X $mod/internal/version.gitCommit=$commit -X $mod/internal/version.gitTreeState=clean"
  ldflags+=" -X $mod/pkg/lint/rules.k8sVersionMajor=1 -X $mod/pkg/lint/rules.k8sVersionMinor=$minor"
  ldflags+=" -X $mod/pkg/chartutil.k8sVersionMajor=1 -X $mod/pkg/chartutil.k8sVersionMinor=$minor"
  echo "$ldflags"
}

cmd_helm() {
  local mod=helm.sh/helm/${HELM_VERSION%%.*} bin=$CACHE_DIR/bin/helm-$HELM_VERSION/helm
  if [[ -x $bin ]] && "$bin" version --short >/dev/null 2>&1; then echo "$bin"; return 0; fi
  go_tool helm "$mod/cmd/helm" "$HELM_VERSION" "version --short" "$(helm_ldflags "$mod")"
}

cmd_kubeconform() {
  go_tool kubeconform github.com/yannh/kubeconform/cmd/kubeconform "$KUBECONFORM_VERSION" -v \
    "-w -s -X main.version=$KUBECONFORM_VERSION"
}

cmd_helm_docs() {
  go_tool helm-docs github.com/norwoodj/helm-docs/cmd/helm-docs "$HELM_DOCS_VERSION" --version \
    "-w -s -X main.version=$HELM_DOCS_VERSION"
}

# ------------------------------------------------------------------ python --

# python3 with PyYAML (needed to read CRD YAML). Uses the system one if it has
# PyYAML, else a small venv in the cache.
PY=
python_yaml() {
  [[ -n $PY ]] && return 0
  if python3 -c 'import yaml' 2>/dev/null; then PY=python3; return 0; fi
  local venv=$CACHE_DIR/pyenv
  if ! "$venv/bin/python" -c 'import yaml' 2>/dev/null; then
    log "PyYAML missing: installing it into $venv"
    python3 -m venv "$venv" >&2 || die "python3 -m venv failed (apt-get install python3-venv, or pip install pyyaml)"
    "$venv/bin/pip" install --quiet 'PyYAML>=6,<7' >&2 || die "pip install PyYAML failed"
  fi
  PY=$venv/bin/python
}

# -------------------------------------------------------------------- CRDs --

CRD_DIR=$CACHE_DIR/crds/spark-operator-$SPARK_OPERATOR_VERSION
SPARKAPP_CRD=$CRD_DIR/sparkoperator.k8s.io_sparkapplications.yaml
SCHEDULED_CRD=$CRD_DIR/sparkoperator.k8s.io_scheduledsparkapplications.yaml

crds_ok() { [[ -s $SPARKAPP_CRD && -s $SCHEDULED_CRD ]] && sealed "$CRD_DIR" 2>/dev/null; }

fetch_crds() {
  crds_ok && return 0
  local src="" modver tmp f
  # The operator's module path is .../v2 since v2; older tags were +incompatible.
  for modver in "github.com/kubeflow/spark-operator/v2@$SPARK_OPERATOR_VERSION" \
                "github.com/kubeflow/spark-operator@$SPARK_OPERATOR_VERSION+incompatible" \
                "github.com/kubeflow/spark-operator@$SPARK_OPERATOR_VERSION"; do
    if src=$(mod_download "$modver" Dir 2>/dev/null) && [[ -d $src/config/crd/bases ]]; then
      log "spark-operator CRDs from Go module $modver"
      break
    fi
    src=""
  done
  [[ -n $src ]] || die "spark-operator $SPARK_OPERATOR_VERSION not served by the Go module proxy"
  mkdir -p "$(dirname "$CRD_DIR")"
  tmp=$(mktemp -d "$CRD_DIR.XXXXXX")
  cp "$src"/config/crd/bases/*.yaml "$tmp"/
  chmod 755 "$tmp" && chmod 644 "$tmp"/*.yaml
  # The helm chart ships its own copy; they should be the same files.
  local chart_copy
  for f in "$tmp"/*.yaml; do
    chart_copy=$src/charts/spark-operator-chart/crds/${f##*/}
    if [[ -f $chart_copy ]] && ! cmp -s "$f" "$chart_copy"; then
      log "warning: $(basename "$f") differs between config/crd/bases and the helm chart"
    fi
  done
  if [[ -f $SPARKAPP_REFERENCE ]]; then
    python_yaml
    if "$PY" "$CONVERTER" compare "$tmp/sparkoperator.k8s.io_sparkapplications.yaml" v1beta2 \
        "$SPARKAPP_REFERENCE" > "$tmp/REFERENCE_CHECK.txt"; then
      log "$(cat "$tmp/REFERENCE_CHECK.txt")"
    else
      log "WARNING: SparkApplication CRD differs from the reference schema:"
      cat "$tmp/REFERENCE_CHECK.txt" >&2
    fi
  fi
  seal "$tmp"
  rm -rf "$CRD_DIR" && mv "$tmp" "$CRD_DIR"
}

cmd_crd() {
  crds_ok || with_lock "crds-$SPARK_OPERATOR_VERSION" fetch_crds
  echo "$SPARKAPP_CRD"
}

# ----------------------------------------------------------------- schemas --

SCHEMA_DIR=$CACHE_DIR/schemas/$K8S_VERSION

schema_stamp() {
  local h
  h=$(sha256sum "$CONVERTER" | cut -c1-16)
  echo "k8s=$K8S_VERSION spark-operator=$SPARK_OPERATOR_VERSION converter=$h"
}

schemas_fresh() {
  [[ -f $SCHEMA_DIR/.stamp && $(cat "$SCHEMA_DIR/.stamp") == "$(schema_stamp)" ]] && sealed "$SCHEMA_DIR" 2>/dev/null
}

build_schemas() {
  schemas_fresh && return 0
  local src swagger tmp v=${K8S_VERSION#v}
  log "generating kubeconform schemas for Kubernetes $K8S_VERSION + spark-operator $SPARK_OPERATOR_VERSION CRDs"
  src=$(mod_download "k8s.io/kubernetes@$K8S_VERSION" Dir)
  swagger=$src/api/openapi-spec/swagger.json
  [[ -f $swagger ]] || die "$swagger missing from the k8s.io/kubernetes module"
  python_yaml
  mkdir -p "$(dirname "$SCHEMA_DIR")"
  tmp=$(mktemp -d "$SCHEMA_DIR.XXXXXX")
  "$PY" "$CONVERTER" k8s "$swagger" "$tmp" --k8s-version "$K8S_VERSION"
  "$PY" "$CONVERTER" crd "$tmp" "$CRD_DIR"/*.yaml --object-meta-from "$swagger"
  # kubeconform's default -kubernetes-version is "master": make that work too.
  ln -s "v$v-standalone" "$tmp/master-standalone"
  ln -s "v$v-standalone-strict" "$tmp/master-standalone-strict"
  chmod 755 "$tmp"
  schema_stamp > "$tmp/.stamp"
  seal "$tmp"
  rm -rf "$SCHEMA_DIR" && mv "$tmp" "$SCHEMA_DIR"
}

cmd_k8s_schemas() {
  cmd_crd >/dev/null
  schemas_fresh || with_lock "schemas-$K8S_VERSION" build_schemas
  echo "$SCHEMA_DIR"
}

# kubeconform against the local schemas only (no default, i.e. GitHub, location).
cmd_validate() {
  local kc dir
  kc=$(cmd_kubeconform)
  dir=$(cmd_k8s_schemas)
  exec "$kc" -kubernetes-version "${K8S_VERSION#v}" \
    -schema-location "$dir" \
    -schema-location "$dir/{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json" \
    "$@"
}

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2; }

main() {
  case "${1:-}" in
    helm) cmd_helm ;;
    kubeconform) cmd_kubeconform ;;
    helm-docs) cmd_helm_docs ;;
    crd) cmd_crd ;;
    k8s-schemas) cmd_k8s_schemas ;;
    all) cmd_helm; cmd_kubeconform; cmd_crd; cmd_k8s_schemas ;;
    validate) shift; cmd_validate "$@" ;;
    -h|--help|help) usage ;;
    *) usage; exit 2 ;;
  esac
}

main "$@"
