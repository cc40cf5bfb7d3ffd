#!/usr/bin/env bash
# Build the local Debian bookworm base image WITHOUT pulling from any image registry:
# debootstrap a minbase rootfs from the host's own Debian mirror and `docker import` it.
#   usage: hack/base-image.sh [TAG]     (default featurizer-base:bookworm)
# Needs a running engine (hack/docker-up.sh) and root (debootstrap chroots).
#
# Caching (each layer is verified, never trusted blindly):
#   1. TAG exists in the engine AND carries our cache-key label   -> nothing to do.
#   2. ~/.cache/featurizer/base/bookworm-minbase-<key>.tar exists AND its sha256 matches
#      -> re-import only (seconds; e.g. after a fresh dockerd with an empty image store).
#   3. otherwise debootstrap from scratch (minutes), write the tar atomically, import.
# <key> hashes the apt sources + this script's REV, so changing either rebuilds.
set -euo pipefail
# System packages, daemons and root file systems get Debian's modes whatever the caller's umask
# (under 077, files root makes would be unreadable to every other user).
umask 022

TAG="${1:-featurizer-base:bookworm}"
SUITE=bookworm
REV=1   # bump to invalidate caches when the rootfs recipe below changes
# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
CACHE=$FEATURIZER_CACHE/base
T0=$SECONDS
elapsed() { echo "base-image: $1 in $((SECONDS - T0))s"; }

# Same mirror(s) the host uses: only those may be reachable. apt itself parses both
# sources.list and deb822 *.sources; --no-release-info makes this work without lists.
# shellcheck disable=SC2016  # $(FIELD) is apt's --format syntax, not shell
# Output: "deb URI SUITE COMPONENTS..." for bookworm, bookworm-updates, bookworm-security.
SOURCES="$(apt-get indextargets --no-release-info --format '$(TARGET_OF) $(REPO_URI) $(RELEASE) $(COMPONENT)' |
  awk -v s="$SUITE" '$1 == "deb" && ($3 == s || index($3, s "-") == 1) {
      k = $2 " " $3; if (!(k in c)) { o[++n] = k; c[k] = "" }
      if (index(" " c[k] " ", " " $4 " ") == 0) c[k] = c[k] " " $4 }
    END { for (i = 1; i <= n; i++) print "deb " o[i] c[o[i]] }')"
MIRROR="$(awk -v s="$SUITE" '$3 == s { print $2; exit }' <<<"$SOURCES")"
if [ -z "$MIRROR" ]; then   # host not on bookworm sources: fall back to the canonical mirror
  MIRROR=http://deb.debian.org/debian/
  SOURCES="deb $MIRROR $SUITE main"
fi
KEY="$(printf '%s\n' "$REV" "$SOURCES" | sha256sum | cut -c1-12)"
TAR="$CACHE/$SUITE-minbase-$KEY.tar"

if [ "$("$DOCKER" image inspect -f '{{index .Config.Labels "featurizer.base.key"}}' "$TAG" 2>/dev/null)" = "$KEY" ]; then
  elapsed "image $TAG already present (key $KEY), nothing to do"; exit 0
fi

if ! { [ -s "$TAR" ] && [ -s "$TAR.sha256" ] && (cd "$CACHE" && sha256sum -c --status "$TAR.sha256"); }; then
  rm -f "$TAR" "$TAR.sha256"   # absent, partial or corrupt: rebuild, never import garbage
  command -v debootstrap >/dev/null || {
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq debootstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null; }
  }
  mkdir -p "$CACHE"
  ROOT="$(mktemp -d "$CACHE/rootfs.XXXXXX")"
  # debootstrap mounts proc/sys inside the chroot and may leave them on failure:
  # unmount before deleting, and never let rm cross into another filesystem.
  cleanup() {
    grep -o " $ROOT/[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    rm -rf --one-file-system "$ROOT" "$TAR.tmp"
  }
  trap cleanup EXIT
  echo "base-image: debootstrap --variant=minbase $SUITE from $MIRROR (key $KEY)"
  debootstrap --variant=minbase "$SUITE" "$ROOT" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 ||
    { tail -n 30 "$CACHE/debootstrap.log" >&2; exit 1; }
  # In-image apt sources = the host's (http mirror, so ca-certificates is not needed).
  printf '%s\n' "$SOURCES" >"$ROOT/etc/apt/sources.list"
  # Slim the image; `apt-get update` in a RUN step refetches lists.
  rm -rf "$ROOT"/var/cache/apt/archives/*.deb "$ROOT"/var/lib/apt/lists/* "$ROOT"/tmp/*
  tar -C "$ROOT" --numeric-owner -cf "$TAR.tmp" .
  mv "$TAR.tmp" "$TAR"    # atomic: an interrupted run leaves no valid-looking tar behind
  (cd "$CACHE" && sha256sum "$(basename "$TAR")" >"$TAR.sha256")
  # Old keys' tarballs are dead weight (~200 MB each).
  find "$CACHE" -maxdepth 1 -name "$SUITE-minbase-*.tar*" ! -name "$(basename "$TAR")*" -delete
  elapsed "rootfs built"
else
  echo "base-image: re-importing cached $TAR"
fi

"$DOCKER" import --change "LABEL featurizer.base.key=$KEY" --change 'CMD ["/bin/bash"]' - "$TAG" <"$TAR" >/dev/null
elapsed "imported $TAG (key $KEY)"
