#!/usr/bin/env bash
# Headless Chromium for the report tests (Debian's `chromium` package). Idempotent.
set -euo pipefail
# System packages, daemons and root file systems get Debian's modes whatever the caller's umask
# (under 077, files root makes would be unreadable to every other user).
umask 022
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "chromium is missing: run 'sudo apt-get install -y chromium' (Debian) first" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
command -v chromium
