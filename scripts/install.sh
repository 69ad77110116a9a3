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
# pip byte-compiles what it installs one file at a time; compileall does it with a worker per core
# and skips the packages' own test suites, which nothing imports: about a minute becomes 27 s on
# two cores. A file that does not compile (a template, code for a newer Python) is left to the
# interpreter, as pip leaves it.
"$python" -m pip install --quiet --no-compile --requirement requirements.lock
mapfile -t site_dirs < <("$python" -c 'import sysconfig; print(*sorted({sysconfig.get_path(name) for name in ("purelib", "platlib")}), sep="\n")')
"$python" -m compileall -q -j 0 -x '/tests?/' "${site_dirs[@]}" >/dev/null || true
[[ "$dependencies_only" == --dependencies-only ]] && exit 0
"$python" -m pip install --quiet --no-deps --editable .
