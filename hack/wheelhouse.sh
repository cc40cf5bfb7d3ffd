#!/usr/bin/env bash
# Prepare the image's Python packages on the host, for the image's Python and platform
# (the build installs offline: RUN steps of the legacy builder have no CA for HTTPS).
#
#   hack/wheelhouse.sh DEST [EXTRAS]        (EXTRAS default: spark)
#
#   DEST/wheels/  every third-party wheel `featurizer[EXTRAS]` needs, pinned by
#                 constraints.txt, for CPython $PY_VERSION on manylinux x86_64 (binary only;
#                 PySpark, published as an sdist, is built into a wheel once on the host)
#   DEST/app/     the featurizer wheel (rebuilt on every call: it is the job's code)
#
# The third-party set is cached under ~/.cache/featurizer/wheelhouse/<key>, keyed by
# constraints.txt, pyproject.toml's dependencies, EXTRAS, Python, platform and this script,
# and hard-linked into DEST (the docker build context). Entries are sealed (hack/lib.sh) and
# checked at every use: an interrupted download or a damaged wheel is redone, never used.
set -euo pipefail

DEST=${1:?usage: hack/wheelhouse.sh DEST [EXTRAS]}
EXTRAS=${2:-spark}
PY_VERSION=${FEATURIZER_IMAGE_PYTHON:-3.11}      # Debian bookworm's python3 (3.11.2)
GLIBC_MINOR=36                                    # bookworm's glibc 2.36
REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=hack/lib.sh
source "$REPO_DIR/hack/lib.sh"
PIP=${PIP:-$REPO_DIR/.venv/bin/pip}
CACHE=$FEATURIZER_CACHE/wheelhouse

[[ -x $PIP ]] || { log "error: no pip at $PIP (run make venv, or set PIP=...)"; exit 1; }

# Wheels built for any glibc up to bookworm's are installable there.
platforms=(--platform manylinux2014_x86_64)
for minor in $(seq 17 "$GLIBC_MINOR"); do platforms+=(--platform "manylinux_2_${minor}_x86_64"); done

key=$( { cat "$REPO_DIR/constraints.txt"
         sed -n '/^dependencies/,/^\[tool/p' "$REPO_DIR/pyproject.toml"
         cat "${BASH_SOURCE[0]}"
         echo "$EXTRAS $PY_VERSION $GLIBC_MINOR"; } | sha256sum | cut -c1-16)
entry=$CACHE/$key

build_app() {  # the featurizer wheel, from the working tree
  rm -rf "$1" && mkdir -p "$1"
  "$PIP" wheel -q --no-deps --no-build-isolation -w "$1" "$REPO_DIR" >&2
}

build_third_party() {
  local tmp app
  mkdir -p "$CACHE"
  tmp=$(mktemp -d "$CACHE/.$key.XXXXXX")
  app=$tmp/.app
  build_app "$app"
  # PySpark (and any other sdist-only pin) becomes a wheel here, on the host, once.
  log "building wheels for sdist-only packages"
  "$PIP" wheel -q --no-deps -c "$REPO_DIR/constraints.txt" -w "$tmp" \
    "pyspark==$(sed -n 's/^pyspark==//p' "$REPO_DIR/constraints.txt")" >&2
  log "downloading featurizer[$EXTRAS] dependencies for cp${PY_VERSION/./} manylinux x86_64"
  "$PIP" download -q --only-binary=:all: --implementation cp --python-version "$PY_VERSION" \
    --abi "cp${PY_VERSION/./}" "${platforms[@]}" -c "$REPO_DIR/constraints.txt" \
    --find-links "$app" --find-links "$tmp" -d "$tmp" "featurizer[$EXTRAS]" >&2
  rm -rf "$app" "$tmp"/featurizer-*.whl
  chmod 0755 "$tmp" && chmod 0644 "$tmp"/*.whl      # mktemp made the folder 0700
  seal "$tmp"
  rm -rf "$entry" && mv "$tmp" "$entry"
}

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"; flock 9
if ! sealed "$entry"; then
  [[ -d $entry ]] && log "cache entry $key is incomplete or damaged: downloading it again"
  build_third_party
  sealed "$entry" || { log "error: the new wheelhouse $entry does not verify"; exit 1; }
  find "$CACHE" -mindepth 1 -maxdepth 1 -type d ! -name "$key" -name '????????????????' -exec rm -rf {} +
fi
rm -rf "$DEST/wheels" && mkdir -p "$DEST/wheels"
while read -r _ wheel; do                      # exactly the verified wheels (./NAME)
  cp -l "$entry/$wheel" "$DEST/wheels/" 2>/dev/null || cp "$entry/$wheel" "$DEST/wheels/"
done <"$entry/SHA256SUMS"
build_app "$DEST/app"
log "$(find "$DEST/wheels" -name '*.whl' | wc -l) wheels ($(du -sh "$DEST/wheels" | cut -f1)) + $(basename "$DEST"/app/*.whl) in $DEST (key $key)"
