#!/usr/bin/env bash
# Install the pinned dependencies and the project into a virtual environment.
# Shared by `make`, CI and the Dockerfile, so all three install exactly the same thing.
#   scripts/install.sh [VENV_DIR] [--dependencies-only] [--all-bytecode]
#     VENV_DIR: default .venv
#     --dependencies-only: the locked dependencies without the project (the image's cached layer)
#     --all-bytecode: byte-compile every installed package, not only the folders the pipeline
#       imports from (scripts/bytecode-dirs.txt): for an environment nobody may write to (the image)
#
# pip installs only uv, at the version the lock pins; uv installs the lock. uv downloads and unpacks
# in parallel: on two cores the lock takes 8 to 20 s (a full or an empty download cache) where pip
# took 46 to 54 s (docs/speed.md). uv does not read pip's settings, so those that say where
# packages come from are handed to it, each from its PIP_* variable or else pip's configuration: the
# index, the extra indexes, the wheel folders and the CA bundle.
set -euo pipefail
cd "$(dirname "$0")/.."
target=.venv
dependencies_only=false
bytecode=(--dirs scripts/bytecode-dirs.txt)
for arg in "$@"; do
  case "$arg" in
    --dependencies-only) dependencies_only=true ;;
    --all-bytecode) bytecode=() ;;
    -*) echo "install.sh: unknown option $arg" >&2; exit 2 ;;
    *) target="$arg" ;;
  esac
done
# shellcheck source=scripts/pip-setting.sh
source scripts/pip-setting.sh

if [[ ! -x "$target/bin/python" ]]; then
  python3 -m venv "$target"
fi
python="$target/bin/python"
uv_pin="$(grep -E '^uv==' requirements.lock)"
"$python" -m pip install --quiet --disable-pip-version-check --no-cache-dir "$uv_pin"

# As pip does: the best version across every index. uv's own default takes a package from the first
# index that has it, so PyTorch's index (which also serves numpy, jinja2 and others) would decide
# versions it does not hold.
uv_args=(--python "$python" --index-strategy unsafe-best-match)
index_url="$(pip_setting PIP_INDEX_URL index-url "$python")"
[[ -z "$index_url" ]] || uv_args+=(--index-url "$index_url")
for url in $(pip_setting PIP_EXTRA_INDEX_URL extra-index-url "$python"); do uv_args+=(--extra-index-url "$url"); done
for place in $(pip_setting PIP_FIND_LINKS find-links "$python"); do uv_args+=(--find-links "$place"); done
ca_bundle="$(pip_setting PIP_CERT cert "$python")"
[[ -z "$ca_bundle" ]] || export SSL_CERT_FILE="$ca_bundle"
uv_install() { "$python" -m uv pip install --quiet "${uv_args[@]}" "$@"; }

# pip itself stays current for the users of the environment.
uv_install --requirement requirements.lock "pip==26.3"
# uv leaves byte-compiling to the first import, which cannot write the cache where
# PYTHONDONTWRITEBYTECODE is set, so every process would compile what it imports again. By default
# only the folders the pipeline imports from are compiled: 8,694 of 18,057 modules, in 19.5 s
# where all took 33.2 s (docs/speed.md). `make test` compiles the rest, which its processes import.
"$python" scripts/compile_bytecode.py "${bytecode[@]}"
"$dependencies_only" && exit 0
uv_install --no-deps --editable .
