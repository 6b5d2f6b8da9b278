#!/usr/bin/env bash
# podman with StreamFlow's settings (containers.conf beside this file), installed on first use
# (apt-get, as root or through sudo). Usage: config/images/podman.sh <podman arguments>
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if ! command -v podman >/dev/null 2>&1 || ! command -v debootstrap >/dev/null 2>&1 \
  || ! command -v runc >/dev/null 2>&1 || [ ! -f /usr/share/keyrings/debian-archive-keyring.gpg ]; then
  sudo=$([ "$(id -u)" = 0 ] || echo sudo)
  echo "[images] installing podman, runc, debootstrap, Debian's keyring (apt-get)" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    podman buildah runc debootstrap debian-archive-keyring uidmap fuse-overlayfs >/dev/null
fi
export CONTAINERS_CONF=${CONTAINERS_CONF:-$here/containers.conf}
exec podman "$@"
