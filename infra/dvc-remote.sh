#!/usr/bin/env bash
# Point this DVC project at a Google Cloud Storage remote, so `dvc push` / `dvc pull` share the
# pipeline's outputs (fetched data, models, predictions) through a bucket.
#
#   infra/dvc-remote.sh gs://BUCKET/PATH [--name NAME] [--project GCP_PROJECT]
#                       [--credentials KEY.json] [--endpoint URL] [--anonymous] [--committed]
#
# Everything goes to .dvc/config.local (git-ignored) by default: a key file path, an emulator
# endpoint and the bucket itself stay on this machine. --committed writes only the remote's URL
# and name to .dvc/config (for a team that shares one bucket); credentials stay local regardless.
# Without --credentials, gcsfs uses Application Default Credentials
# (GOOGLE_APPLICATION_CREDENTIALS, `gcloud auth application-default login`, or the VM's account).
#
#   --endpoint URL   a GCS-compatible endpoint instead of storage.googleapis.com (an emulator)
#   --anonymous      no credentials at all (emulators, public buckets)
set -euo pipefail

usage() {
  sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
  exit "${1:-2}"
}

[[ $# -ge 1 ]] || usage
case "$1" in -h | --help) usage 0 ;; esac
url="$1"
shift
[[ "$url" == gs://* ]] || { echo "error: remote URL must start with gs:// (got '$url')" >&2; exit 2; }

name=storage
project=""
credentials=""
endpoint=""
anonymous=false
scope=--local
while [[ $# -gt 0 ]]; do
  case "$1" in
    --name) name="$2"; shift 2 ;;
    --project) project="$2"; shift 2 ;;
    --credentials) credentials="$2"; shift 2 ;;
    --endpoint) endpoint="$2"; shift 2 ;;
    --anonymous) anonymous=true; shift ;;
    --committed) scope=""; shift ;;
    -h | --help) usage 0 ;;
    *) echo "error: unknown option '$1'" >&2; usage ;;
  esac
done

if [[ -n "$credentials" && ! -r "$credentials" ]]; then
  echo "error: --credentials '$credentials' is not a readable file" >&2
  exit 2
fi
command -v dvc >/dev/null || { echo "error: dvc is not on PATH (activate the project's .venv)" >&2; exit 2; }

# shellcheck disable=SC2086  # $scope is empty or one flag
dvc remote add $scope --default --force "$name" "$url"
modify() { dvc remote modify --local "$name" "$1" "$2"; }
[[ -n "$project" ]] && modify projectname "$project"
[[ -n "$credentials" ]] && modify credentialpath "$(cd "$(dirname "$credentials")" && pwd)/$(basename "$credentials")"
[[ -n "$endpoint" ]] && modify endpointurl "$endpoint"
[[ "$anonymous" == true ]] && modify allow_anonymous_login true
echo "DVC remote '$name' -> $url (default). Try: dvc push"
