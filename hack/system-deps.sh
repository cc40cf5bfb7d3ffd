#!/usr/bin/env bash
# System packages the local run needs, installed idempotently when we can (root + apt):
#   - a Java 17+ runtime for Spark;
#   - native BLAS/LAPACK, which Spark ML's PCA uses through netlib (the pure-JVM
#     fallback makes the 1280x1280 decomposition ~6x slower).
# Without root it only reports what is missing.
set -euo pipefail
# System packages, daemons and root file systems get Debian's modes whatever the caller's umask
# (under 077, files root makes would be unreadable to every other user).
umask 022

missing=()
java_major=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1 || true)
[ "${java_major:-0}" -ge 17 ] 2>/dev/null || missing+=(openjdk-17-jre-headless)
ldconfig -p 2>/dev/null | grep -q 'liblapack.so.3' || missing+=(liblapack3)
ldconfig -p 2>/dev/null | grep -q 'libopenblas' || missing+=(libopenblas0-pthread)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
  echo "note: please install ${missing[*]} (needs root/apt); continuing without" >&2
  [[ " ${missing[*]} " == *" openjdk-17-jre-headless "* ]] && exit 1
  exit 0
fi
echo "installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null 2>&1 || {
  apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; }
