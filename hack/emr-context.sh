#!/usr/bin/env bash
# Fill the build context of docker/emr-on-eks.Dockerfile (the build itself is offline):
#
#   hack/emr-context.sh DEST        (make emr-image uses .build/emr)
#
#   DEST/wheels/           third-party wheels pinned by constraints.txt for CPython 3.11,
#                          manylinux x86_64 (hack/wheelhouse.sh, shared cache), minus
#                          pyspark/py4j: EMR brings its own Spark
#   DEST/app/              the featurizer wheel
#   DEST/constraints.txt   the one pin file
#   DEST/main.py           the spark-submit entry point (local:///opt/featurizer/main.py)
#   DEST/models/           the MobileNetV2 no-top weights, from FEATURIZER_WEIGHTS_DIR
#
# EMR 7.x runs Amazon Linux 2023 (glibc 2.34): a wheel that needs a newer glibc is refused.
set -euo pipefail

DEST=${1:?usage: hack/emr-context.sh DEST}
REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=hack/lib.sh
source "$REPO_DIR/hack/lib.sh"
WEIGHTS=mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5
EMR_GLIBC_MINOR=34

weights_dir=${FEATURIZER_WEIGHTS_DIR:-$REPO_DIR/../shared/models}
[[ -f $weights_dir/$WEIGHTS ]] || die "no $WEIGHTS in $weights_dir: set FEATURIZER_WEIGHTS_DIR"

mkdir -p "$DEST"
FEATURIZER_IMAGE_PYTHON=3.11 bash "$REPO_DIR/hack/wheelhouse.sh" "$DEST" spark
rm -f "$DEST"/wheels/pyspark-*.whl "$DEST"/wheels/py4j-*.whl

for wheel in "$DEST"/wheels/*.whl; do
  while read -r minor; do
    [[ -z $minor ]] || (( minor <= EMR_GLIBC_MINOR )) ||
      die "${wheel##*/} needs glibc 2.$minor > 2.$EMR_GLIBC_MINOR"
  done < <(grep -o 'manylinux_2_[0-9]*' <<<"${wheel##*/}" | cut -d_ -f3)
done

cp "$REPO_DIR/constraints.txt" "$DEST/constraints.txt"
cp "$REPO_DIR/job/main.py" "$DEST/main.py"
cp "$REPO_DIR/docker/decom.sh" "$DEST/decom.sh"
mkdir -p "$DEST/models"
cp -l "$weights_dir/$WEIGHTS" "$DEST/models/" 2>/dev/null || cp "$weights_dir/$WEIGHTS" "$DEST/models/"
log "context ready in $DEST ($(du -sh "$DEST" | cut -f1))"
