#!/usr/bin/env bash
# The reproducibility check, as CI and the GitHub workflow run it:
# (a) install the pinned dependencies, (b) fail if dvc.lock is stale, (c) run a small pipeline
# twice and fail unless weights and metrics are identical, (d) check the committed metrics
# against dvc.lock. CYBULDE_DATASETS_DIR points at the raw datasets (default ../shared/datasets).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh .venv
exec .venv/bin/python -m cybulde.repro_check all --root .
