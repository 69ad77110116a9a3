#!/usr/bin/env bash
# Start the team's MLflow tracking server: runs, params and metrics in PostgreSQL, artifacts
# proxied by the server to a Google Cloud Storage bucket (clients need no bucket credentials).
#
#   MLFLOW_BACKEND_STORE_URI=postgresql+psycopg2://USER:PASSWORD@HOST:5432/DB \
#   MLFLOW_ARTIFACTS_DESTINATION=gs://BUCKET/mlartifacts \
#   MLFLOW_AUTH_ADMIN_PASSWORD=... \
#   infra/tracking-server/start.sh [--host 127.0.0.1] [--port 5000] [--no-auth] [other `mlflow server` options]
#
# Connection settings come from the environment only, never from arguments (which `ps` shows) or
# params.yaml: MLFLOW_BACKEND_STORE_URI, or the libpq variables PGHOST, PGPORT, PGUSER, PGPASSWORD,
# PGDATABASE. The password is never printed. Bucket credentials: Application Default Credentials
# (GOOGLE_APPLICATION_CREDENTIALS or the VM's service account); STORAGE_EMULATOR_HOST points the
# server at a GCS emulator instead.
#
# Authentication is on: MLflow's basic-auth app, its users and permissions in the same database
# (or MLFLOW_AUTH_DATABASE_URI), anonymous requests refused. MLFLOW_AUTH_ADMIN_PASSWORD is the admin's
# first password (ignored once the admin exists); MLFLOW_AUTH_ADMIN_USERNAME (admin),
# MLFLOW_AUTH_DEFAULT_PERMISSION (READ: every user may read), MLFLOW_FLASK_SERVER_SECRET_KEY (the
# CSRF key; random per start unless set) or a whole MLFLOW_AUTH_CONFIG_PATH are optional.
# --no-auth serves without any authentication, with a warning. TLS and a request size cap: put
# proxy.sh in front (see README.md).
#
# Optional: MLFLOW_BIN (default: mlflow on PATH), MLFLOW_WORKERS (default 1).
set -euo pipefail

usage() {
  sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'
  exit "${1:-2}"
}

fail() {
  echo "error: $*" >&2
  exit 2
}

percent_encode() {
  local LC_ALL=C text="$1" encoded="" char index
  for ((index = 0; index < ${#text}; index++)); do
    char="${text:index:1}"
    case "$char" in
      [a-zA-Z0-9._~-]) encoded+="$char" ;;
      *) printf -v char '%%%02X' "'$char"; encoded+="$char" ;;
    esac
  done
  printf '%s' "$encoded"
}

store_uri_from_libpq_env() {
  [[ -n "${PGHOST:-}" && -n "${PGUSER:-}" ]] \
    || fail "set MLFLOW_BACKEND_STORE_URI, or PGHOST, PGUSER (and PGPASSWORD, PGPORT, PGDATABASE)"
  local credentials
  credentials="$(percent_encode "$PGUSER")"
  if [[ -n "${PGPASSWORD:-}" ]]; then
    credentials+=":$(percent_encode "$PGPASSWORD")"
  fi
  printf 'postgresql+psycopg2://%s@%s:%s/%s' "$credentials" "$PGHOST" "${PGPORT:-5432}" \
    "$(percent_encode "${PGDATABASE:-mlflow}")"
}

# SQLAlchemy 2.1 maps plain postgresql:// to psycopg 3; the project ships psycopg2.
with_psycopg2_driver() {
  case "$1" in
    postgresql+psycopg2://*) printf '%s' "$1" ;;
    postgresql://* | postgres://*) printf 'postgresql+psycopg2://%s' "${1#*://}" ;;
    *) fail "MLFLOW_BACKEND_STORE_URI must be a postgresql+psycopg2:// URI (got scheme '${1%%://*}')" ;;
  esac
}

# The URI for the log, without its secrets: the password of user:password@ (or a lone user part,
# which may be a token), whatever characters it holds, and the values of query parameters named
# like a secret. cybulde.config.paths.redact_uri redacts the same way.
redacted() {
  local uri="$1"
  if [[ "$uri" == *://* ]]; then
    local scheme="${uri%%://*}" rest="${uri#*://}"
    if [[ "$rest" == *@* && "$rest" != /* ]]; then
      local credentials="${rest%@*}" host="${rest##*@}"  # the last @: a raw password may hold @, :, / or %
      if [[ "$credentials" == *:* ]]; then
        uri="$scheme://${credentials%%:*}:***@$host"
      else
        uri="$scheme://***@$host"
      fi
    fi
  fi
  without_secret_parameters "$uri"
}

without_secret_parameters() (
  shopt -s nocasematch
  local text="$1" masked=""
  # A value runs to the next parameter: a raw & or ; followed by no = is part of it.
  local parameter='^(.*)([?&;][^=?&;#]*(pass|pwd|secret|token|key|credential|auth)[^=?&;#]*=)'
  parameter+='([^&;#]*([&;][^=&;#]*)*)(([&;#].*)?)$'
  while [[ "$text" =~ $parameter ]]; do  # from the last such parameter to the first
    masked="${BASH_REMATCH[2]}***${BASH_REMATCH[6]}$masked"
    text="${BASH_REMATCH[1]}"
  done
  printf '%s' "$text$masked"
)

# The auth app's settings in a file only this user can read: its database URI holds the password.
write_auth_config() (
  umask 077
  local folder uri="${MLFLOW_AUTH_DATABASE_URI:-$1}"
  folder="$(mktemp -d "${TMPDIR:-/tmp}/mlflow-auth.XXXXXX")"
  # configparser reads % as interpolation: a percent-encoded password needs %%.
  printf '[mlflow]\ndefault_permission = %s\ndatabase_uri = %s\nadmin_username = admin\n' \
    "${MLFLOW_AUTH_DEFAULT_PERMISSION:-READ}" "${uri//%/%%}" > "$folder/basic_auth.ini"
  printf '%s' "$folder/basic_auth.ini"
)

warn_no_auth() {
  cat >&2 <<'WARNING'
WARNING: --no-auth: this tracking server has NO authentication. Anyone who can reach its port can
WARNING: read, change and delete runs, register model versions, move aliases (what serving loads)
WARNING: and overwrite artifacts. Use it only on loopback for a try-out or a test.
WARNING
}

case "${1:-}" in -h | --help) usage 0 ;; esac
auth=on
arguments=()
for argument in "$@"; do
  case "$argument" in
    --backend-store-uri* | --artifacts-destination* | --default-artifact-root*)
      fail "$argument: pass the store through MLFLOW_BACKEND_STORE_URI / PG* and the bucket through MLFLOW_ARTIFACTS_DESTINATION" ;;
    --app-name*) fail "$argument: authentication is on unless --no-auth; its settings come from MLFLOW_AUTH_*" ;;
    --no-auth) auth=off ;;
    *) arguments+=("$argument") ;;
  esac
done

destination="${MLFLOW_ARTIFACTS_DESTINATION:-}"
[[ "$destination" == gs://* ]] \
  || fail "MLFLOW_ARTIFACTS_DESTINATION must be a gs://BUCKET/PATH URL (got '${destination}')"

if [[ -n "${MLFLOW_BACKEND_STORE_URI:-}" ]]; then
  store_uri="$(with_psycopg2_driver "$MLFLOW_BACKEND_STORE_URI")"
else
  store_uri="$(store_uri_from_libpq_env)"
fi
# mlflow reads --backend-store-uri from this variable, which keeps the password off argv.
export MLFLOW_BACKEND_STORE_URI="$store_uri"
unset PGPASSWORD
# The default job runner forks many workers (about 2.4 GB); the server does not need it.
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION="${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}"
export GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT="${GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT:-false}"
# Empty values (as docker compose passes unset options) mean "not set" to this script.
for optional in STORAGE_EMULATOR_HOST GOOGLE_APPLICATION_CREDENTIALS; do
  if [[ -z "${!optional:-}" ]]; then
    unset "$optional"
  fi
done

if [[ "$auth" == on && -z "${MLFLOW_AUTH_ADMIN_PASSWORD:-}" && -z "${MLFLOW_AUTH_CONFIG_PATH:-}" ]]; then
  fail "authentication is on: set MLFLOW_AUTH_ADMIN_PASSWORD (the admin's first password), or pass --no-auth"
fi

mlflow_bin="${MLFLOW_BIN:-mlflow}"
command -v "$mlflow_bin" >/dev/null || fail "'$mlflow_bin' not found: activate the project's .venv or set MLFLOW_BIN"

auth_options=()
if [[ "$auth" == on ]]; then
  if [[ -n "${MLFLOW_AUTH_CONFIG_PATH:-}" ]]; then
    auth_summary="basic-auth ($MLFLOW_AUTH_CONFIG_PATH)"
  else
    MLFLOW_AUTH_CONFIG_PATH="$(write_auth_config "$store_uri")"
    export MLFLOW_AUTH_CONFIG_PATH
    auth_summary="basic-auth (users in $(redacted "${MLFLOW_AUTH_DATABASE_URI:-$store_uri}"), default permission ${MLFLOW_AUTH_DEFAULT_PERMISSION:-READ})"
  fi
  # The auth app's CSRF key: random for one server; several servers behind one name need the same.
  if [[ -z "${MLFLOW_FLASK_SERVER_SECRET_KEY:-}" ]]; then
    MLFLOW_FLASK_SERVER_SECRET_KEY="$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')"
    export MLFLOW_FLASK_SERVER_SECRET_KEY
  fi
  auth_options=(--app-name basic-auth)
else
  warn_no_auth
  auth_summary="OFF (--no-auth)"
fi

echo "mlflow server: store $(redacted "$store_uri"), artifacts $destination${STORAGE_EMULATOR_HOST:+ (emulator $STORAGE_EMULATOR_HOST)}, authentication $auth_summary"
exec "$mlflow_bin" server \
  "${auth_options[@]}" \
  --serve-artifacts \
  --artifacts-destination "$destination" \
  --workers "${MLFLOW_WORKERS:-1}" \
  "${arguments[@]}"
