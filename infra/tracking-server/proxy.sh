#!/usr/bin/env bash
# TLS and a request-size cap in front of the tracking server (or `mlflow models serve`): nginx with
# nginx.conf.template, in the foreground.
#
#   TLS_CERTIFICATE=/etc/mlflow/tls/cert.pem TLS_CERTIFICATE_KEY=/etc/mlflow/tls/key.pem \
#   infra/tracking-server/proxy.sh [--listen 8443] [--upstream 127.0.0.1:5000]
#
# Optional: MAX_BODY_SIZE (default 10m; every request but artifact uploads), MAX_ARTIFACT_BODY_SIZE
# (default 4g), NGINX_BIN (default: nginx on PATH, else Debian's /usr/sbin/nginx), PROXY_RUNTIME_DIR
# (its configuration and temporary files; default: a new folder under TMPDIR). Run as root, nginx's
# workers run as `nobody`: they must be able to enter PROXY_RUNTIME_DIR's parents (a folder under /tmp
# is fine), as they write bodies and answers larger than their buffers into its temporary folders.
set -euo pipefail

usage() {
  sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
  exit "${1:-2}"
}

fail() {
  echo "error: $*" >&2
  exit 2
}

render() {
  local text name
  text="$(<"$1")"
  for name in LISTEN UPSTREAM TLS_CERTIFICATE TLS_CERTIFICATE_KEY MAX_BODY_SIZE MAX_ARTIFACT_BODY_SIZE; do
    text="${text//"\${$name}"/${!name}}"
  done
  printf '%s\n' "$text"
}

main_config() {
  local runtime="$1" temp
  printf 'worker_processes 1;\npid %s/nginx.pid;\nerror_log stderr warn;\n' "$runtime"
  if [[ "$(id -u)" == 0 ]]; then
    printf 'user nobody nogroup;\n'
  fi
  printf 'events { worker_connections 256; }\nhttp {\n    access_log /dev/stdout;\n'
  for temp in client_body proxy fastcgi uwsgi scgi; do
    printf '    %s_temp_path %s/%s;\n' "$temp" "$runtime" "$temp"
  done
  printf '    include %s/server.conf;\n}\n' "$runtime"
}

LISTEN=8443
UPSTREAM=127.0.0.1:5000
while (($#)); do
  case "$1" in
    -h | --help) usage 0 ;;
    --listen) LISTEN="${2:?--listen needs a port or address:port}"; shift 2 ;;
    --upstream) UPSTREAM="${2:?--upstream needs host:port}"; shift 2 ;;
    *) fail "unknown option $1" ;;
  esac
done
export LISTEN UPSTREAM MAX_BODY_SIZE="${MAX_BODY_SIZE:-10m}" MAX_ARTIFACT_BODY_SIZE="${MAX_ARTIFACT_BODY_SIZE:-4g}"
for file in TLS_CERTIFICATE TLS_CERTIFICATE_KEY; do
  [[ -n "${!file:-}" && -r "${!file}" ]] || fail "$file must name a readable PEM file (got '${!file:-}')"
done

nginx_bin="${NGINX_BIN:-$(command -v nginx || echo /usr/sbin/nginx)}"
[[ -x "$nginx_bin" ]] || fail "nginx not found: apt-get install nginx, or set NGINX_BIN"

runtime="${PROXY_RUNTIME_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/cybulde-proxy.XXXXXX")}"
mkdir -p "$runtime"
render "$(dirname "$0")/nginx.conf.template" > "$runtime/server.conf"
main_config "$runtime" > "$runtime/nginx.conf"
if [[ "$(id -u)" == 0 ]]; then
  chmod 711 "$runtime"  # the workers (nobody) pass through to their temporary folders; they list nothing
  for temp in client_body proxy fastcgi uwsgi scgi; do
    install -d -o nobody -m 700 "$runtime/$temp"
  done
  if command -v runuser > /dev/null && ! runuser -u nobody -- test -w "$runtime/client_body"; then
    fail "nginx's workers (user nobody) cannot reach $runtime: set PROXY_RUNTIME_DIR to a folder whose parents others may enter"
  fi
fi

echo "proxy: https on $LISTEN -> http://$UPSTREAM (bodies up to $MAX_BODY_SIZE, artifact uploads up to $MAX_ARTIFACT_BODY_SIZE)"
exec "$nginx_bin" -p "$runtime" -c "$runtime/nginx.conf" -e stderr -g 'daemon off;'
