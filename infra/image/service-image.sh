# shellcheck shell=bash
# Sourced by postgres-image.sh and nginx-image.sh: the options and steps every offline substitute
# for an official service image shares. The caller defines usage() and sets `tag` to its default.
#
#   prepare_service_image "$@"
#
# parses --tag, --base and --rebuild; exits 0 if the image exists (unless --rebuild); builds
# python-base.sh's image when no --base is given; and leaves `context`, an empty build context
# removed on exit. After it: `tag`, `base` and `context`.

prepare_service_image() {
  local here rebuild=false
  here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
  base=""
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --tag) tag="$2"; shift 2 ;;
      --base) base="$2"; shift 2 ;;
      --rebuild) rebuild=true; shift ;;
      -h | --help) usage 0 ;;
      *) echo "error: unknown option '$1'" >&2; usage ;;
    esac
  done
  command -v podman >/dev/null || { echo "error: podman is missing (apt-get install podman runc)" >&2; exit 2; }
  export CONTAINERS_CONF="${CONTAINERS_CONF:-$here/containers.conf}"

  if [[ "$rebuild" == false ]] && podman image exists "$tag"; then
    echo "$tag exists (--rebuild to build it again)"
    exit 0
  fi
  if [[ -z "$base" ]]; then
    base=localhost/cybulde-python:3.11-bookworm
    "$here/python-base.sh" --tag "$base"
  fi
  context="$(mktemp -d)"
  trap 'rm -rf "$context"' EXIT
}
