# shellcheck shell=bash
# Sourced by deploy/build-image.sh and deploy/python-standin.sh: which container engine to use, and how buildah or
# podman should run build steps on this machine.
#   CONTAINER_ENGINE=docker|podman|buildah   forces one; otherwise docker if its daemon answers, else buildah,
#   else podman. A docker client without a daemon (the development machine) does not count.

container_engine() {
  if [ -n "${CONTAINER_ENGINE:-}" ]; then echo "$CONTAINER_ENGINE"; return 0; fi
  if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then echo docker; return 0; fi
  local e
  for e in buildah podman; do
    if command -v "$e" >/dev/null 2>&1; then echo "$e"; return 0; fi
  done
  echo "no container engine: start a Docker daemon, or apt-get install buildah (or podman)" >&2
  return 2
}

# Isolation flags for buildah/podman RUN steps. crun 1.8 (Debian bookworm's default runtime) refuses a host with
# cgroups in hybrid mode ("cgroups in hybrid mode not supported, drop all controllers from cgroupv2"); runc does
# not, and without an OCI runtime at all chroot isolation still builds. BUILDAH_ISOLATION, when set, wins.
container_isolation() {
  if [ -n "${BUILDAH_ISOLATION:-}" ]; then echo "--isolation=$BUILDAH_ISOLATION"; return 0; fi
  local runc
  runc=$(command -v runc || true)
  if [ -n "$runc" ]; then echo "--runtime=$runc"; else echo "--isolation=chroot"; fi
}
