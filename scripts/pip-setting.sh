# shellcheck shell=bash
# Sourced by the scripts that hand pip's settings to another tool (uv, an image build).
# pip_setting VARIABLE KEY [PYTHON]: a pip setting from its environment variable (PIP_CERT), else
# from pip's configuration files (global.cert), as PYTHON's pip reads them (default python3).
pip_setting() {
  local value="${!1:-}"
  [[ -n "$value" ]] || value="$("${3:-python3}" -m pip config list 2>/dev/null | sed -n "s/^global\.$2='\(.*\)'$/\1/p" | tail -1)"
  echo "$value"
}
