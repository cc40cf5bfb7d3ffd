#!/usr/bin/env bash
# Build the featurizer image (what `make image` runs): fill docker/context/ on the host, then
# an offline `docker build` of docker/Dockerfile. Prints build time and image size.
#
#   hack/build-image.sh [IMAGE] [BASE_IMAGE]
#     IMAGE       default featurizer:local
#     BASE_IMAGE  default featurizer-base:bookworm, built here from Debian packages by
#                 hack/base-image.sh (no registry is reachable on this machine); real users
#                 pass a public one, e.g. debian:bookworm-slim (the Dockerfile's default).
#
# docker/context/ (git-ignored) gets: wheels/ (third-party, hack/wheelhouse.sh), app/ (the
# featurizer wheel + job/main.py), jars/ (hack/fetch-jars.sh), models/ (the MobileNetV2
# weights, resolved like the job does: FEATURIZER_WEIGHTS_DIR, Keras cache, download) and
# constraints.txt. Env: IMAGE_EXTRAS (default "spark") = featurizer extras installed;
# IMAGE_BUILD_FLAGS = extra `docker build` flags (e.g. --no-cache for a cold build).
set -euo pipefail

IMAGE=${1:-featurizer:local}
BASE_IMAGE=${2:-featurizer-base:bookworm}
EXTRAS=${IMAGE_EXTRAS:-spark}
REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LOG_PREFIX=image
# shellcheck source=hack/lib.sh
source "$REPO_DIR/hack/lib.sh"
CONTEXT=$REPO_DIR/docker/context
PY=$REPO_DIR/.venv/bin/python
T0=$SECONDS
pin() { sed -n "s/^$1==//p" "$REPO_DIR/constraints.txt"; }

bash "$REPO_DIR/hack/docker-up.sh" >&2
if [[ $BASE_IMAGE == featurizer-base:* ]]; then
  bash "$REPO_DIR/hack/base-image.sh" "$BASE_IMAGE" >&2
fi

mkdir -p "$CONTEXT"
bash "$REPO_DIR/hack/wheelhouse.sh" "$CONTEXT" "$EXTRAS"
cp "$REPO_DIR/job/main.py" "$CONTEXT/app/main.py"
# The pins of exactly the wheels in the wheelhouse: a pin added for a dev tool must not
# invalidate the image's dependency layer.
"$PY" - "$REPO_DIR/constraints.txt" "$CONTEXT/wheels" >"$CONTEXT/constraints.txt" <<'PY'
import re, sys
from pathlib import Path
norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()
wheels = {norm(w.name.split("-")[0]) for w in Path(sys.argv[2]).glob("*.whl")}
print("# constraints.txt, restricted to the packages in this wheelhouse (hack/build-image.sh)")
for line in Path(sys.argv[1]).read_text().splitlines():
    if "==" in line and norm(line.split("==")[0]) in wheels:
        print(line)
PY
rm -rf "$CONTEXT/jars"
jars=$(bash "$REPO_DIR/hack/fetch-jars.sh" --copy "$CONTEXT/jars")
weights=$(TF_CPP_MIN_LOG_LEVEL=3 "$PY" -c '
import sys
from featurizer import errors, weights
try:
    print(weights.resolve().path)
except errors.FeaturizerError as exc:
    sys.exit(f"image: {exc}")')
mkdir -p "$CONTEXT/models"
cmp -s "$weights" "$CONTEXT/models/${weights##*/}" || cp "$weights" "$CONTEXT/models/"
find "$CONTEXT/models" -type f ! -name "${weights##*/}" -delete
log "context ready in $((SECONDS - T0))s ($(du -sh --apparent-size "$CONTEXT" | cut -f1))"

# the version in a jar's name: hadoop-aws-3.5.0.jar, bundle-2.35.4-s3-sts-....jar (slimmed)
version_of() { tr ',' '\n' <<<"$jars" | sed -nE "s|.*/$1-([0-9][0-9.]*[0-9])(-.*)?\.jar$|\1|p"; }
T1=$SECONDS
# shellcheck disable=SC2086  # IMAGE_BUILD_FLAGS is a list of flags
bash "$REPO_DIR/hack/docker-build.sh" "$IMAGE" deps,files ${IMAGE_BUILD_FLAGS:-} -f "$REPO_DIR/docker/Dockerfile" \
  --build-arg BASE_IMAGE="$BASE_IMAGE" \
  --build-arg FEATURIZER_VERSION="$("$PY" -c 'import featurizer; print(featurizer.__version__)')" \
  --build-arg SPARK_VERSION="$(pin pyspark)" \
  --build-arg TENSORFLOW_VERSION="$(pin tensorflow_cpu)" \
  --build-arg HADOOP_VERSION="$(version_of hadoop-aws)" \
  --build-arg AWS_SDK_VERSION="$(version_of bundle)" \
  "$REPO_DIR/docker"
size=$("$DOCKER" image inspect -f '{{.Size}}' "$IMAGE")
log "built $IMAGE in $((SECONDS - T1))s (docker build) / $((SECONDS - T0))s (total)," \
    "size $(awk -v b="$size" 'BEGIN { printf "%.2f GB (%d MB)", b / 1e9, b / 1e6 }')"
