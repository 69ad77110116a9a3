#!/usr/bin/env bash
# Record which site-packages folders the default pipeline imports from: scripts/bytecode-dirs.txt,
# the folders scripts/install.sh byte-compiles. Rerun it when requirements.lock changes.
#   scripts/record_bytecode_dirs.sh
# It needs an installed .venv and reruns every stage (dvc repro --force), with Python writing the
# bytecode of every module it imports into an empty folder of its own (PYTHONPYCACHEPREFIX): the
# folders that fill are the ones the pipeline's processes imported from.
set -euo pipefail
cd "$(dirname "$0")/.."
prefix="$(mktemp -d)"
trap 'rm -rf "$prefix"' EXIT
export PATH="$PWD/.venv/bin:$PATH" PYTHONPYCACHEPREFIX="$prefix"
unset PYTHONDONTWRITEBYTECODE
make publish-default
dvc repro --force
dvc metrics show >/dev/null
site="$(python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"
{
  echo "# The site-packages folders the default pipeline imports from, one per line: scripts/install.sh"
  echo "# byte-compiles the modules directly in them. Written by scripts/record_bytecode_dirs.sh."
  (cd "$prefix$site" && find . -name '*.pyc' -printf '%h\n' | sed 's|^\./\?||; s|^$|.|' | sort -u)
} > scripts/bytecode-dirs.txt
echo "recorded $(grep -vc '^#' scripts/bytecode-dirs.txt) folders in scripts/bytecode-dirs.txt"
