#!/usr/bin/env bash
# Build the service image from deploy/Dockerfile (run from anywhere; the context is the repository root) with
# whatever engine exists: docker if its daemon answers, else buildah, else podman (deploy/container-engine.sh).
#
#   deploy/build-image.sh [--tag TAG] [--base IMAGE | --stand-in]
#
#   --tag TAG     image name (default localhost/sluice:dev)
#   --base IMAGE  the Python base image instead of python:3.11-slim (--build-arg PYTHON_IMAGE)
#   --stand-in    use the local python:3.11-slim stand-in (deploy/python-standin.sh), building it first when the
#                 engine does not have it: for a machine that reaches PyPI and Debian but not Docker Hub
#
# pip in the builder stage uses PyPI unless PIP_INDEX_URL is set here (then passed on as a build argument). When
# this host's pip trusts a CA bundle of its own (PIP_CERT, or pip's global.cert: a TLS-intercepting proxy), buildah
# and podman mount that file read-only into the build steps and point the builder's pip at it; neither the mount
# nor the setting reaches the runtime image. Docker builds cannot mount a host file this way: behind such a proxy,
# give the daemon's build a PIP_INDEX_URL it can verify.
set -euo pipefail
DEPLOY=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$DEPLOY")
# shellcheck source=deploy/container-engine.sh
. "$DEPLOY/container-engine.sh"

TAG=localhost/sluice:dev
BASE=
STANDIN_TAG=localhost/sluice-python-standin:3.11-slim
while [ $# -gt 0 ]; do
  case "$1" in
    --tag) TAG=$2; shift 2 ;;
    --base) BASE=$2; shift 2 ;;
    --stand-in) BASE=$STANDIN_TAG; shift ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done

ENGINE=$(container_engine)
export CONTAINER_ENGINE=$ENGINE

has_image() {
  case "$ENGINE" in
    docker|podman) "$ENGINE" image inspect "$1" >/dev/null 2>&1 ;;
    buildah) buildah inspect --type image "$1" >/dev/null 2>&1 ;;
  esac
}
if [ "$BASE" = "$STANDIN_TAG" ] && ! has_image "$BASE"; then
  echo "building the python:3.11-slim stand-in $BASE (deploy/python-standin.sh)" >&2
  "$DEPLOY/python-standin.sh" "$BASE"
fi

args=(-f "$DEPLOY/Dockerfile" -t "$TAG")
[ -n "$BASE" ] && args+=(--build-arg "PYTHON_IMAGE=$BASE")
[ -n "${PIP_INDEX_URL:-}" ] && args+=(--build-arg "PIP_INDEX_URL=$PIP_INDEX_URL")
if [ "$ENGINE" != docker ]; then
  # Docker image format: the OCI format has no HEALTHCHECK and buildah would drop it.
  args+=(--format docker --layers --network host "$(container_isolation)")
  cert=${PIP_CERT:-$(python3 -m pip config get global.cert 2>/dev/null || true)}
  if [ -n "$cert" ] && [ -f "$cert" ]; then
    args+=(-v "$cert:/run/sluice-build-ca.crt:ro" --build-arg PIP_CERT=/run/sluice-build-ca.crt)
  fi
fi

start=$(date +%s)
case "$ENGINE" in
  docker) docker build "${args[@]}" "$ROOT" ;;
  buildah) buildah build "${args[@]}" "$ROOT" ;;
  podman) podman build "${args[@]}" "$ROOT" ;;
  *) echo "unknown CONTAINER_ENGINE=$ENGINE (docker, podman or buildah)" >&2; exit 2 ;;
esac
echo "built $TAG with $ENGINE in $(( $(date +%s) - start )) s" >&2
