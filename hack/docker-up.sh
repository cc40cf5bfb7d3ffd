#!/usr/bin/env bash
# Ensure a local Docker engine is running (idempotent; safe to re-run, safe in CI as root).
#
# Why this exists: the machines have only a docker *client* (/usr/local/bin/docker) and no
# engine, and nothing can be pulled from an image registry. We install Debian's docker.io
# (dockerd 20.10, API 1.41) and start it by hand -- there is no systemd here.
#
# Network rule: the engine gets NO bridge (--bridge=none) and touches no iptables, so no
# docker0 / 172.17.x network ever exists. Containers and builds must use `--network host`.
#
# Env knobs:
#   FEATURIZER_CACHE          cache/log dir (default ~/.cache/featurizer)
#   FEATURIZER_DOCKER_DRIVERS storage drivers to try, in order (default "overlay2 fuse-overlayfs vfs")
set -euo pipefail
# System packages, daemons and root file systems get Debian's modes whatever the caller's umask
# (under 077, files root makes would be unreadable to every other user).
umask 022

# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
CACHE=$FEATURIZER_CACHE
LOG="$CACHE/dockerd.log"
DRIVERS="${FEATURIZER_DOCKER_DRIVERS:-overlay2 fuse-overlayfs vfs}"
mkdir -p "$CACHE"

# Client choice (measured): /usr/local/bin/docker (28.x, API 1.50) works against dockerd
# 20.10 because the CLI negotiates down to API 1.41 by itself ("downgraded from 1.50"), so
# DOCKER_API_VERSION is NOT needed. We still prefer Debian's /usr/bin/docker here since it
# matches the engine exactly. Gotcha with the 28.x client: it has no buildx plugin, so
# `docker build` falls back to the legacy builder with a DEPRECATED banner, and fails outright
# if DOCKER_BUILDKIT=1 is set. Use DOCKER_BUILDKIT=0 (explicit legacy) or /usr/bin/docker
# (lib.sh's DOCKER).
dinfo() { timeout 10 "$DOCKER" info >/dev/null 2>&1; }

if dinfo; then
  echo "docker-up: engine already running ($("$DOCKER" info --format '{{.ServerVersion}} storage={{.Driver}}'))"
  exit 0
fi

# Serialise concurrent runs so two callers never start two engines.
exec 9>"$CACHE/docker-up.lock"
flock 9
dinfo && { echo "docker-up: engine came up meanwhile"; exit 0; }

if ! command -v dockerd >/dev/null 2>&1; then
  # policy-rc.d=101 stops the package's init script from auto-starting dockerd with the
  # default bridge (172.17.0.0/16) during install. Only remove it if we created it.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt_install() { apt-get install -y -q --no-install-recommends docker.io; }
  # Package lists may be missing/stale on a fresh machine: update only if install fails.
  apt_install || { apt-get update -q && apt_install; }
  [ -x /usr/bin/docker ] && DOCKER=/usr/bin/docker
fi

# A dockerd may already be starting (e.g. a concurrent/earlier run): wait for it, don't race it.
pid_alive() { [ -s /var/run/docker.pid ] && [ "$(cat /proc/"$(cat /var/run/docker.pid)"/comm 2>/dev/null)" = dockerd ]; }
wait_ready() {  # $1 = pid to watch (empty: just wait). Fails early if that process dies.
  for _ in $(seq 60); do
    dinfo && return 0
    if [ -n "${1:-}" ] && ! kill -0 "$1" 2>/dev/null; then return 1; fi
    sleep 1
  done
  return 1
}

if pid_alive; then
  echo "docker-up: dockerd (pid $(cat /var/run/docker.pid)) already starting; waiting"
  wait_ready "$(cat /var/run/docker.pid)" || { echo "docker-up: existing dockerd not ready; see $LOG" >&2; exit 1; }
else
  flags=(--bridge=none --iptables=false)
  dockerd --help 2>&1 | grep -q -- '--ip6tables' && flags+=(--ip6tables=false)
  started=
  for drv in $DRIVERS; do
    # fuse-overlayfs needs its helper binary and /dev/fuse; skip it when unavailable.
    if [ "$drv" = fuse-overlayfs ] && { ! command -v fuse-overlayfs >/dev/null || [ ! -e /dev/fuse ]; }; then
      continue
    fi
    echo "docker-up: starting dockerd --storage-driver=$drv (log: $LOG)"
    echo "=== $(date -Is) dockerd ${flags[*]} --storage-driver=$drv" >>"$LOG"
    # setsid+nohup: the engine must outlive this script and its process group.
    # 9>&-: dockerd must not inherit (and so hold forever) our flock.
    setsid nohup dockerd "${flags[@]}" --storage-driver="$drv" >>"$LOG" 2>&1 </dev/null 9>&- &
    pid=$!
    if wait_ready "$pid"; then started=1; break; fi
    # dockerd exits quickly if the driver is unsupported on this kernel/filesystem.
    echo "docker-up: storage driver $drv did not come up; trying next" >&2
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  done
  [ -n "$started" ] || { echo "docker-up: dockerd failed to start; tail of $LOG:" >&2; tail -n 30 "$LOG" >&2; exit 1; }
fi

"$DOCKER" version --format 'docker-up: client {{.Client.Version}} (API {{.Client.APIVersion}}), server {{.Server.Version}} (API {{.Server.APIVersion}})'
echo "docker-up: storage driver $("$DOCKER" info --format '{{.Driver}}'), client $DOCKER"
