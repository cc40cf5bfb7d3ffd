#!/usr/bin/env bash
# Build the stand-in for the EMR on EKS Spark base image (docker/emr-standin.Dockerfile):
#
#   hack/emr-standin.sh [TAG]       (default featurizer-emr-standin:spark-3.5.6)
#
# Spark is the pyspark 3.5.6 wheel's package directory (EMR 7.13 ships Spark 3.5.6-amzn-2),
# built once from PyPI's sdist on the host and cached under ~/.cache/featurizer/emr/. The
# image is rebuilt only when its inputs change: it carries their hash as a label.
set -euo pipefail

SPARK_VERSION=${FEATURIZER_EMR_SPARK_VERSION:-3.5.6}
TAG=${1:-featurizer-emr-standin:spark-$SPARK_VERSION}
REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=hack/lib.sh
source "$REPO_DIR/hack/lib.sh"
PIP=${PIP:-$REPO_DIR/.venv/bin/pip}
CACHE=$FEATURIZER_CACHE/emr
CONTEXT=$REPO_DIR/.build/emr-standin

bash "$REPO_DIR/hack/base-image.sh" >&2
base_key=$("$DOCKER" image inspect -f '{{index .Config.Labels "featurizer.base.key"}}' featurizer-base:bookworm)
key=$( { cat "$REPO_DIR/docker/emr-standin.Dockerfile" "${BASH_SOURCE[0]}"; echo "$SPARK_VERSION $base_key"; } |
       sha256sum | cut -c1-16)
if [[ $("$DOCKER" image inspect -f '{{index .Config.Labels "featurizer.emr-standin.key"}}' "$TAG" 2>/dev/null) == "$key" ]]; then
  log "$TAG is up to date (key $key)"; exit 0
fi

# The pyspark wheel (pip verifies PyPI's hashes), used only while sealed (hack/lib.sh).
wheel_dir=$CACHE/pyspark-$SPARK_VERSION
mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"; flock 9
if ! sealed "$wheel_dir" 2>/dev/null; then
  log "building the pyspark $SPARK_VERSION wheel from PyPI (once)"
  rm -rf "$wheel_dir" && mkdir -p "$wheel_dir"
  "$PIP" wheel -q --no-deps -w "$wheel_dir" "pyspark==$SPARK_VERSION" >&2
  seal "$wheel_dir"
fi
rm -rf "$CONTEXT" && mkdir -p "$CONTEXT"
python3 -m zipfile -e "$wheel_dir"/pyspark-"$SPARK_VERSION"-*.whl "$CONTEXT/unpacked"
mv "$CONTEXT/unpacked/pyspark" "$CONTEXT/spark" && rm -rf "$CONTEXT/unpacked"
chmod -R a+rX "$CONTEXT/spark" && chmod a+x "$CONTEXT"/spark/bin/* "$CONTEXT"/spark/sbin/*

log "building $TAG (Spark $SPARK_VERSION, key $key)"
bash "$REPO_DIR/hack/docker-build.sh" "$TAG" "" -f "$REPO_DIR/docker/emr-standin.Dockerfile" \
  --label "featurizer.emr-standin.key=$key" "$CONTEXT"
rm -rf "$CONTEXT"
log "built $TAG"
