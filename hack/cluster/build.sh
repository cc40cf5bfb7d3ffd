#!/usr/bin/env bash
# Builds, once, the binaries of the local cluster (hack/cluster/cluster.sh) from the Go module
# proxy and caches them under ${FEATURIZER_CLUSTER_CACHE:-~/.cache/featurizer-cluster}:
#
#   kube-<v>-<key>/      kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl
#                        (k8s.io/kubernetes, through the wrapper module kube/)
#   etcd-<v>-<key>/      etcd (go.etcd.io/etcd/server/v3, wrapper etcd/)
#   operator-<v>-<key>/  spark-operator (github.com/kubeflow/spark-operator/v2, wrapper operator/)
#   pause-<v>-<key>/     pause, compiled statically from the Kubernetes release's
#                        build/pause/linux/pause.c (the sandbox image is made from it)
#
# The versions are the `require` lines of the wrapper go.mod files (one place each). <key>
# hashes the wrapper's go.mod + go.sum, the Go version and the build flags, so a change to any
# of them builds into a new directory; a directory is used only while it is sealed
# (hack/lib.sh: the sha256 of every binary, recorded last and checked at every use), so a build
# cut short or a damaged binary is built again. Cold: ~25-40 min on 2 busy cores for
# Kubernetes; cached: a few seconds (the check).
#
#   hack/cluster/build.sh              build what is missing; print NAME=DIR lines
#   hack/cluster/build.sh gomod K8S_VERSION OPERATOR_VERSION
#                                      regenerate kube/ and operator/ go.mod from upstream's
set -euo pipefail
shopt -s inherit_errexit

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LOG_PREFIX="cluster build"
# shellcheck source=hack/lib.sh
source "$HERE/../lib.sh"
CACHE=${FEATURIZER_CLUSTER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/featurizer-cluster}
export GOFLAGS=${GOFLAGS:--buildvcs=false} GOWORK=off GO111MODULE=on CGO_ENABLED=0


# The version of MODULE that wrapper $1 requires (`require M v` or a line of a require block).
required() {
  awk -v m="$2" '$1 == "require" && $2 == m {print $3; exit} $1 == m && $2 ~ /^v/ {print $2; exit}' \
    "$HERE/$1/go.mod"
}

# Directory of a module version in the module cache (downloaded if needed).
module_dir() {
  local out
  out=$(cd "$HERE/kube" && go mod download -json "$1" 2>&1) || die "go mod download $1: $out"
  sed -n 's/^\t"Dir": "\(.*\)",$/\1/p' <<<"$out"
}

key() {  # key WRAPPER FLAGS...: what the binaries depend on besides the sources
  { cat "$HERE/$1/go.mod" "$HERE/$1/go.sum" 2>/dev/null; go version; echo "${@:2}"; } |
    sha256sum | cut -c1-12
}

# build NAME WRAPPER VERSION LDFLAGS PACKAGE... -> directory of the built binaries
build() {
  local name=$1 wrapper=$2 version=$3 ldflags=$4; shift 4
  local dir tmp start
  dir="$CACHE/$name-$version-$(key "$wrapper" "$ldflags" "$@")"
  if ! sealed "$dir" 2>/dev/null; then
    mkdir -p "$CACHE"
    exec 9>"$CACHE/.$name.lock"
    flock 9
    if ! sealed "$dir"; then
      command -v go >/dev/null || die "go not found: install Go >= 1.24 to build $name $version"
      start=$SECONDS
      log "building $name $version ($*) - a cold build takes long on 2 cores; cached after"
      tmp=$(mktemp -d "$dir.tmp-XXXXXX")
      (cd "$HERE/$wrapper" && go build -trimpath -ldflags "$ldflags" -o "$tmp/" "$@") ||
        { rm -rf "$tmp"; die "go build of $name $version failed"; }
      chmod 755 "$tmp" && seal "$tmp" && rm -rf "$dir" && mv "$tmp" "$dir"
      log "$name $version built in $((SECONDS - start)) s: $dir"
    fi
    exec 9>&-
  fi
  echo "$dir"
}

version_ldflags() {  # version_ldflags PACKAGE vX.Y.Z: what `make` of the project stamps
  local v=$2 major minor
  major=$(cut -d. -f1 <<<"${v#v}") minor=$(cut -d. -f2 <<<"$v")
  echo "-X $1.gitVersion=$v -X $1.gitMajor=$major -X $1.gitMinor=$minor -X $1.gitTreeState=clean"
}

build_kube() {
  local v ld
  v=$(required kube k8s.io/kubernetes)
  ld="-s -w $(version_ldflags k8s.io/component-base/version "$v") $(version_ldflags k8s.io/client-go/pkg/version "$v")"
  # `tool` = the packages listed in kube/go.mod's tool block (the five commands).
  build kube kube "$v" "$ld" tool
}

build_etcd() {
  local v dir
  v=$(required etcd go.etcd.io/etcd/server/v3)
  dir=$(build etcd etcd "$v" "-s -w" go.etcd.io/etcd/server/v3)
  # go build names the binary of .../server/v3 "server": give it its real name.
  [[ -x $dir/etcd ]] || ln -sf server "$dir/etcd"
  echo "$dir"
}

build_operator() {
  local v
  v=$(required operator github.com/kubeflow/spark-operator/v2)
  # The operator's Makefile stamps component-base's version too (`operator version`, its logs).
  build operator operator "$v" "-s -w $(version_ldflags k8s.io/component-base/version "$v")" tool
}

build_pause() {
  local kube_version src version dir tmp
  kube_version=$(required kube k8s.io/kubernetes)
  src=$(module_dir "k8s.io/kubernetes@$kube_version")/build/pause
  version=$(sed -n 's/^TAG ?= *//p' "$src/Makefile")
  dir="$CACHE/pause-$version-$( (cat "$src/linux/pause.c"; gcc --version) | sha256sum | cut -c1-12)"
  if ! sealed "$dir"; then
    command -v gcc >/dev/null || die "gcc is needed for the pause binary: apt-get install gcc libc6-dev"
    tmp=$(mktemp -d "$dir.tmp-XXXXXX")
    gcc -Os -Wall -Werror -static -DVERSION="v$version" -o "$tmp/pause" "$src/linux/pause.c" ||
      { rm -rf "$tmp"; die "compiling pause.c failed (static libc: apt-get install libc6-dev)"; }
    strip "$tmp/pause"
    echo "$version" >"$tmp/version"
    chmod 755 "$tmp" && seal "$tmp" && rm -rf "$dir" && mv "$tmp" "$dir"
  fi
  echo "$dir"
}

# Wrapper go.mod files from upstream's: the replace lines are what a module download cannot
# apply (k8s.io/kubernetes: ./staging/... -> the published v0.X.Y of the same release;
# spark-operator: its k8s.io pins, copied).
gomod() {
  local k8s=$1 op=$2 src
  src=$(module_dir "k8s.io/kubernetes@$k8s")
  {
    sed -n '1,/^require/{/^require/d;p}' "$HERE/kube/go.mod"
    echo "require k8s.io/kubernetes $k8s"
    echo
    echo "replace ("
    sed -n 's#^\t\(k8s.io/[a-z-]*\) => ./staging/.*#\t\1 => \1 v0.'"${k8s#v1.}"'#p' "$src/go.mod"
    echo ")"
  } >"$HERE/kube/go.mod.new"
  mv "$HERE/kube/go.mod.new" "$HERE/kube/go.mod"
  src=$(module_dir "github.com/kubeflow/spark-operator/v2@$op")
  {
    sed -n '1,/^require/{/^require/d;p}' "$HERE/operator/go.mod"
    echo "require github.com/kubeflow/spark-operator/v2 $op"
    echo
    sed -n '/^replace (/,/^)/p' "$src/go.mod"
  } >"$HERE/operator/go.mod.new"
  mv "$HERE/operator/go.mod.new" "$HERE/operator/go.mod"
  for wrapper in kube operator; do (cd "$HERE/$wrapper" && go mod tidy); done
  log "kube/ and operator/ go.mod regenerated for Kubernetes $k8s, spark-operator $op"
}

case ${1:-all} in
  all)
    echo "KUBE_BIN=$(build_kube)"
    echo "ETCD_BIN=$(build_etcd)"
    echo "OPERATOR_BIN=$(build_operator)"
    echo "PAUSE_BIN=$(build_pause)"
    ;;
  gomod) [[ $# -eq 3 ]] || die "usage: build.sh gomod K8S_VERSION OPERATOR_VERSION"; gomod "$2" "$3" ;;
  *) die "usage: build.sh [all | gomod K8S_VERSION OPERATOR_VERSION]" ;;
esac
