#!/usr/bin/env bash
# `docker build` (legacy builder, host network, quiet) that keeps the engine's disk bounded.
#
#   hack/docker-build.sh IMAGE STAGES [docker build arguments...]
#     IMAGE   the tag of the built image, e.g. featurizer:local
#     STAGES  comma-separated build stages kept as IMAGE-STAGE tags ("" for none)
#
# Why: the legacy builder leaves each build stage's last layer untagged, and a rebuild after
# a change leaves the previous image untagged too. Both pile up as dangling images (42 GB on
# a build machine after a day; CI then failed with "no space left on device"). Tagging the
# stages keeps them as build cache; afterwards the dangling images that carry this script's
# label, i.e. stale builds of ours and nobody else's, are pruned.
set -euo pipefail

image=$1 stages=$2
shift 2
# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
LABEL=io.featurizer.build

build() {
  DOCKER_BUILDKIT=0 "$DOCKER" build --network host -q --label "$LABEL=${image%%:*}" "$@" >/dev/null
}

build -t "$image" "$@"
# The stages were just built: tagging them is all cache hits (so never --no-cache here).
cached=()
for arg in "$@"; do [[ $arg == --no-cache ]] || cached+=("$arg"); done
IFS=, read -ra names <<<"$stages"
for stage in "${names[@]}"; do
  build --target "$stage" -t "$image-$stage" "${cached[@]}"
done
"$DOCKER" image prune -f --filter "label=$LABEL" >/dev/null
