#!/usr/bin/env bash
# A local STAND-IN for the python:3.11-slim base image, for a machine that reaches Debian's mirror but not Docker
# Hub (the development machine). It is NOT the official image: Debian bookworm's own python3.11 (from
# /usr/bin, in a venv at /usr/local so that /usr/local/bin/python and pip exist as in the official image)
# instead of python.org's build in /usr/local; pip and setuptools are Debian's bundled wheels, without `wheel`.
# The official image is what real builds use; this one only lets deploy/Dockerfile be built and run here.
#
#   deploy/python-standin.sh [TAG]        (root; needs debootstrap and buildah, podman or docker)
#
# TAG defaults to localhost/sluice-python-standin:3.11-slim; build with it through
#   deploy/build-image.sh --base TAG   (which passes --build-arg PYTHON_IMAGE=TAG).
# DEBIAN_MIRROR overrides the mirror (default: the first deb.debian.org-style URI of this host's apt sources).
set -euo pipefail

TAG=${1:-localhost/sluice-python-standin:3.11-slim}
SUITE=bookworm

mirror() {
  if [ -n "${DEBIAN_MIRROR:-}" ]; then echo "$DEBIAN_MIRROR"; return; fi
  local uri
  uri=$(grep -hoE '^(URIs:|deb) +https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null \
        | head -n1 | awk '{print $2}') || true
  echo "${uri:-http://deb.debian.org/debian}"
}

command -v debootstrap >/dev/null || { echo "debootstrap not found: apt-get install debootstrap" >&2; exit 2; }
# shellcheck source=deploy/container-engine.sh
. "$(dirname "$0")/container-engine.sh"
ENGINE=$(container_engine)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/sluice-standin.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
ROOTFS=$WORK/rootfs

debootstrap --variant=minbase "$SUITE" "$ROOTFS" "$(mirror)"
# The runtime packages python:3.11-slim has (ca-certificates, netbase, tzdata) and Debian's Python 3.11.
# debootstrap --include does not resolve python3.11-venv's dependencies, so apt-get does it inside the root.
chroot "$ROOTFS" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
  ca-certificates netbase tzdata python3.11 python3.11-venv
chroot "$ROOTFS" apt-get clean
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin
# /usr/local/bin/python, python3, pip, pip3 as in the official image; pip installs into /usr/local/lib.
chroot "$ROOTFS" python3.11 -m venv /usr/local
chroot "$ROOTFS" /usr/local/bin/python -m pip --version

ENV_PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin
case "$ENGINE" in
  buildah)
    ctr=$(buildah from scratch)
    mnt=$(buildah mount "$ctr")
    tar -C "$ROOTFS" -cf - . | tar -C "$mnt" -xpf -
    buildah umount "$ctr" >/dev/null
    buildah config --env PATH=$ENV_PATH --env LANG=C.UTF-8 --cmd python3 \
      --label org.opencontainers.image.description="stand-in for python:3.11-slim (Debian bookworm python3.11)" \
      "$ctr"
    buildah commit --rm "$ctr" "$TAG" >/dev/null
    ;;
  podman|docker)
    tar -C "$ROOTFS" -cf - . | "$ENGINE" import \
      --change "ENV PATH=$ENV_PATH" --change "ENV LANG=C.UTF-8" --change 'CMD ["python3"]' - "$TAG" >/dev/null
    ;;
  *) echo "unknown CONTAINER_ENGINE=$ENGINE (docker, podman or buildah)" >&2; exit 2 ;;
esac
echo "$TAG"
