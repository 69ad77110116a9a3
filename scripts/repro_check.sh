#!/usr/bin/env bash
# The reproducibility check, as CI and the GitHub workflow run it:
# (a) install the pinned dependencies, (b) fail if dvc.lock is stale, (c) check the committed
# metrics and plots against dvc.lock, (d) fail if a stage imports a project module its deps do not
# cover, (e) run the tiny pipeline twice and fail unless weights, metrics and plots are identical,
# and unless every stage declares the params it read in the first run.
# CYBULDE_DATASETS_DIR points at the raw datasets (default ../shared/datasets).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh .venv
exec .venv/bin/python -m cybulde.reproducibility.check all --root .
