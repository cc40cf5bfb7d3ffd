#!/usr/bin/env bash
# Shared helpers of the hack/ scripts. A script sets LOG_PREFIX (default: its file name) and
# then: source "$(dirname "${BASH_SOURCE[0]}")/lib.sh" (or ../lib.sh from hack/cluster/).

# One line per step on stderr, prefixed with the script's name; die ends the script.
LOG_PREFIX=${LOG_PREFIX:-$(basename "$0" .sh)}
log() { printf '%s: %s\n' "$LOG_PREFIX" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Every cache of the project lives under one root (the local cluster's large one, built
# binaries and images, under FEATURIZER_CLUSTER_CACHE beside it). Parts can be pointed
# elsewhere: FEATURIZER_JARS_CACHE (hack/fetch-jars.sh), FEATURIZER_TOOLS_CACHE (hack/tools.sh;
# the tests keep it while they empty the rest).
FEATURIZER_CACHE=${FEATURIZER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/featurizer}
export FEATURIZER_CACHE

# The Docker client that matches the engine hack/docker-up.sh starts (Debian's docker.io in
# /usr/bin; a docker on PATH elsewhere may be a newer client the engine refuses).
# shellcheck disable=SC2034  # used by the scripts that source this file
if [[ -x /usr/bin/docker ]]; then DOCKER=/usr/bin/docker; else DOCKER=docker; fi

# Cache entries are folders that are complete and intact only when sealed: `seal` records
# the sha256 of every file (written last, after the entry is complete), `sealed` checks
# each of them again. An entry cut short, or damaged since, is rebuilt, never used.
seal() {  # seal DIR
  (cd "$1" && find . -type f ! -name 'SHA256SUMS*' -print0 | sort -z | xargs -0 -r sha256sum >SHA256SUMS.tmp &&
     mv SHA256SUMS.tmp SHA256SUMS)
}

sealed() {  # sealed DIR: true if DIR was sealed and every file still matches
  [[ -s $1/SHA256SUMS ]] && (cd "$1" && sha256sum --quiet --strict -c SHA256SUMS >&2)
}
