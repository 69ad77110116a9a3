#!/usr/bin/env bash
# Build the training image from the repository's Dockerfile, with docker where it exists, else
# podman (with runc and this folder's containers.conf). `make image` runs it.
#
#   infra/image/build.sh [--tag TAG] [--python-image IMAGE | --offline-base] [--torch-variant cpu]
#                        [--torch-index URL] [--ca-bundle FILE] [--wheels DIR] [--host-pip]
#                        [--engine docker|podman]
#
#   --tag TAG            the image's name (default cybulde:latest)
#   --python-image IMAGE the Python 3.11 base (default: the Dockerfile's official python image)
#   --offline-base       build that base from Debian's archive (python-base.sh) and use it
#   --torch-variant V    cpu (default) or a CUDA tag such as cu128
#   --torch-index URL    where pip finds that torch build (default PyTorch's index; '': PyPI only)
#   --ca-bundle FILE     a CA bundle for pip's downloads (a proxy that re-signs TLS): a build secret
#   --wheels DIR         a local wheel folder pip searches first (podman only: a build-time volume)
#   --host-pip           this machine's pip settings: its CA bundle and wheel folder (PIP_CERT and
#                        PIP_FIND_LINKS, else pip config's global.cert and global.find-links) as
#                        --ca-bundle and --wheels, and PIP_EXTRA_INDEX_URL (or none) as --torch-index
# None of these options leaves anything in the image.
set -euo pipefail

usage() {
  sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'
  exit "${1:-2}"
}

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
# shellcheck source=scripts/pip-setting.sh
source "$root/scripts/pip-setting.sh"
tag=cybulde:latest
python_image=""
offline_base=false
engine=""
args=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --tag) tag="$2"; shift 2 ;;
    --python-image) python_image="$2"; shift 2 ;;
    --offline-base) offline_base=true; shift ;;
    --torch-variant) args+=(--build-arg "TORCH_VARIANT=$2"); shift 2 ;;
    --torch-index) args+=(--build-arg "TORCH_INDEX_URL=$2"); shift 2 ;;
    --ca-bundle)
      [[ -r "$2" ]] || { echo "error: --ca-bundle '$2' is not a readable file" >&2; exit 2; }
      args+=(--secret "id=pip-ca-bundle,src=$(realpath "$2")"); shift 2 ;;
    --wheels)
      [[ -d "$2" ]] || { echo "error: --wheels '$2' is not a folder" >&2; exit 2; }
      wheels="$(realpath "$2")"; shift 2 ;;
    --engine) engine="$2"; shift 2 ;;
    --host-pip)
      args+=(--build-arg "TORCH_INDEX_URL=${PIP_EXTRA_INDEX_URL:-}")
      ca_bundle="$(pip_setting PIP_CERT cert)"
      if [[ -f "$ca_bundle" ]]; then args+=(--secret "id=pip-ca-bundle,src=$(realpath "$ca_bundle")"); fi
      find_links="$(pip_setting PIP_FIND_LINKS find-links)"
      if [[ -d "$find_links" ]]; then wheels="$(realpath "$find_links")"; fi
      shift ;;
    -h | --help) usage 0 ;;
    *) echo "error: unknown option '$1'" >&2; usage ;;
  esac
done

if [[ -z "$engine" ]]; then
  # A docker client alone is not enough: its engine must answer.
  if docker info >/dev/null 2>&1; then engine=docker; elif command -v podman >/dev/null; then engine=podman; fi
fi
case "$engine" in
  docker) export DOCKER_BUILDKIT=1 ;;  # build secrets and cache mounts
  podman)
    export CONTAINERS_CONF="${CONTAINERS_CONF:-$here/containers.conf}"
    args+=(--format docker) ;;  # OCI images ignore the Dockerfile's SHELL
  *) echo "error: neither docker nor podman is installed (Debian: apt-get install podman runc)" >&2; exit 2 ;;
esac
if [[ -n "${wheels:-}" ]]; then
  [[ "$engine" == podman ]] || { echo "error: --wheels needs podman (docker build mounts no volumes)" >&2; exit 2; }
  args+=(--volume "$wheels:/run/build/wheels:ro")
fi
if [[ "$offline_base" == true ]]; then
  python_image=localhost/cybulde-python:3.11-bookworm
  "$here/python-base.sh" --tag "$python_image"
fi
[[ -n "$python_image" ]] && args+=(--build-arg "PYTHON_IMAGE=$python_image")

started=$SECONDS
"$engine" build --tag "$tag" "${args[@]}" "$root"
echo "built $tag with $engine in $((SECONDS - started)) s"
