#!/usr/bin/env bash
# Install the pinned dependencies and the project into a virtual environment.
# Shared by `make`, CI and the Dockerfile, so all three install exactly the same thing.
#   scripts/install.sh [VENV_DIR] [--dependencies-only]
#     VENV_DIR: default .venv; "--system" installs into the current Python
#     --dependencies-only: the locked dependencies without the project (the image's cached layer)
set -euo pipefail
cd "$(dirname "$0")/.."
target="${1:-.venv}"
dependencies_only="${2:-}"
if [[ "$target" == "--system" ]]; then
  python=python3
else
  if [[ ! -x "$target/bin/python" ]]; then
    python3 -m venv "$target"
  fi
  python="$target/bin/python"
fi
"$python" -m pip install --quiet --upgrade "pip==26.3"
"$python" -m pip install --quiet --requirement requirements.lock
[[ "$dependencies_only" == --dependencies-only ]] && exit 0
"$python" -m pip install --quiet --no-deps --editable .
