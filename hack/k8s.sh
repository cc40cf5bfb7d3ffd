#!/usr/bin/env bash
# The chart's checks and its rendered manifests (see mk/k8s.mk).
#
#   hack/k8s.sh render [DIR]   helm template for every helm/featurizer/values-*.yaml into
#                              DIR/<name>.yaml (default k8s/), with the Namespace object
#   hack/k8s.sh validate       helm lint; every rendering validated strictly by kubeconform
#                              against the Kubernetes and spark-operator CRD schemas; k8s/ in
#                              sync; a bad values file and a bad manifest must be rejected
set -euo pipefail
shopt -s inherit_errexit

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=hack/lib.sh
source "$REPO/hack/lib.sh"
CHART=$REPO/helm/featurizer
FIXTURES=$REPO/tests/k8s/fixtures
RELEASE=featurizer
NAMESPACE=featurizer
HELM=${FEATURIZER_HELM:-$(bash "$REPO/hack/tools.sh" helm)}


values_files() { ls "$CHART"/values-*.yaml; }

# render_one VALUES [--set ...]: the manifests `kubectl apply -f k8s/<name>.yaml` applies.
render_one() {
  local values=$1; shift
  printf '# Rendered from helm/featurizer with %s by make k8s-render: edit the chart, not this file.\n' \
    "$(basename "$values")"
  "$HELM" template "$RELEASE" "$CHART" --namespace "$NAMESPACE" --values "$values" \
    --set namespace.create=true "$@"
}

cmd_render() {
  local out=${1:-$REPO/k8s} values name
  mkdir -p "$out"
  for values in $(values_files); do
    name=$(basename "$values" .yaml); name=${name#values-}
    render_one "$values" > "$out/$name.yaml"
    log "rendered $out/$name.yaml"
  done
}

# expect_failure WHAT PATTERN CMD...: CMD must fail and say PATTERN.
expect_failure() {
  local what=$1 pattern=$2 output; shift 2
  if output=$("$@" 2>&1); then
    die "$what was accepted"
  fi
  grep -q -- "$pattern" <<<"$output" || die "$what failed without mentioning $pattern: $output"
  log "ok: $what rejected: $(grep -m1 -- "$pattern" <<<"$output" | cut -c1-160)"
}

cmd_validate() {
  local values
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
  for values in $(values_files); do
    "$HELM" lint --strict "$CHART" --namespace "$NAMESPACE" --values "$values" >"$tmp/lint" 2>&1 \
      || { cat "$tmp/lint" >&2; die "helm lint with $(basename "$values")"; }
    log "ok: helm lint --strict with $(basename "$values")"
  done
  cmd_render "$tmp/rendered" 2>/dev/null
  # The same chart as a ScheduledSparkApplication (each run writes an output of its own), and
  # with every cluster-operations value on.
  render_one "$CHART/values-kind.yaml" --set schedule.enabled=true \
    --set 'job.output=s3a://featurizer/output/{app}' > "$tmp/rendered/scheduled.yaml"
  render_one "$CHART/values-kind.yaml" --values "$FIXTURES/operations.yaml" > "$tmp/rendered/operations.yaml"
  bash "$REPO/hack/tools.sh" validate -strict -summary "$tmp/rendered" "$REPO/k8s"
  grep -q '^kind: ScheduledSparkApplication' "$tmp/rendered/scheduled.yaml" \
    || die "schedule.enabled rendered no ScheduledSparkApplication"
  for values in $(values_files); do
    grep -q '^kind: SparkApplication' "$tmp/rendered/$(basename "$values" .yaml | sed 's/^values-//').yaml" \
      || die "$(basename "$values") rendered no SparkApplication"
  done
  diff -r "$tmp/rendered" "$REPO/k8s" --exclude scheduled.yaml --exclude operations.yaml >"$tmp/diff" \
    || { cat "$tmp/diff" >&2; die "k8s/ is stale: run make k8s-render"; }
  log "ok: k8s/ matches the chart"
  expect_failure "a values file with a wrong type (values.schema.json)" "/driver/cores" \
    "$HELM" template "$RELEASE" "$CHART" --values "$FIXTURES/bad-values-wrong-type.yaml"
  expect_failure "a schedule whose runs would all write one output" "put {app} in it" \
    "$HELM" template "$RELEASE" "$CHART" --values "$CHART/values-kind.yaml" --set schedule.enabled=true
  expect_failure "a SparkApplication with a wrong type (CRD schema)" "/spec/driver/cores" \
    bash "$REPO/hack/tools.sh" validate -strict "$FIXTURES/bad-sparkapplication.yaml"
  log "k8s-validate: all checks passed"
}

case "${1:-}" in
  render) shift; cmd_render "$@" ;;
  validate) cmd_validate ;;
  *) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2; exit 2 ;;
esac
