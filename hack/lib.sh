#!/usr/bin/env bash
# Shared helpers of the hack/ scripts: `source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"`.

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
