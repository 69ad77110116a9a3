#!/usr/bin/env bash
# The offline substitute for the official Python base image: Debian bookworm (debootstrap, from
# Debian's archive) with Debian's Python 3.11, venv, pip, git and the CA certificates, for machines
# that reach Debian's mirror but not Docker Hub. Build the training image on it with
#   make image PYTHON_IMAGE=localhost/cybulde-python:3.11-bookworm
#
#   infra/image/python-base.sh [--tag TAG] [--mirror URL] [--rebuild]
#
# Needs root, debootstrap and podman (apt-get install podman runc debootstrap). Takes about a
# minute; an existing TAG is kept unless --rebuild.
#   --tag TAG      the image to create (default localhost/cybulde-python:3.11-bookworm)
#   --mirror URL   the Debian mirror (default http://deb.debian.org/debian)
set -euo pipefail

usage() {
  sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
  exit "${1:-2}"
}

tag=localhost/cybulde-python:3.11-bookworm
mirror=http://deb.debian.org/debian
rebuild=false
while [[ $# -gt 0 ]]; do
  case "$1" in
    --tag) tag="$2"; shift 2 ;;
    --mirror) mirror="$2"; shift 2 ;;
    --rebuild) rebuild=true; shift ;;
    -h | --help) usage 0 ;;
    *) echo "error: unknown option '$1'" >&2; usage ;;
  esac
done

for tool in debootstrap podman; do
  command -v "$tool" >/dev/null || { echo "error: $tool is missing (apt-get install podman runc debootstrap)" >&2; exit 2; }
done
[[ $EUID -eq 0 ]] || { echo "error: debootstrap needs root" >&2; exit 2; }
export CONTAINERS_CONF="${CONTAINERS_CONF:-$(cd "$(dirname "$0")" && pwd)/containers.conf}"

if [[ "$rebuild" == false ]] && podman image exists "$tag"; then
  echo "$tag exists (--rebuild to build it again)"
  exit 0
fi

rootfs="$(mktemp -d)"
trap 'rm -rf "$rootfs"' EXIT
minbase="$tag-minbase"
debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >/dev/null
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
tar --numeric-owner -C "$rootfs" -c . | podman import --quiet - "$minbase" >/dev/null

context="$(mktemp -d)"
trap 'rm -rf "$rootfs" "$context"' EXIT
podman build --quiet --tag "$tag" --build-arg "BASE=$minbase" -f - "$context" >/dev/null <<'CONTAINERFILE'
ARG BASE
FROM ${BASE}
ENV LANG=C.UTF-8
RUN apt-get update \
    && apt-get install --yes --no-install-recommends python3 python3-venv python3-pip git ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && ln -s /usr/bin/python3 /usr/local/bin/python
CMD ["python3"]
CONTAINERFILE
podman rmi "$minbase" >/dev/null
echo "$tag: Debian bookworm, $(podman run --rm "$tag" python3 --version)"
