# Quick start:  make pipeline   (sets up .venv, publishes the default dataset version, runs dvc repro)
#               make test       (the test suite; CI runs it through .ci/run)
SHELL := /bin/bash
VENV ?= .venv
BIN := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

# Where the raw datasets live (read-only; never copied into the repo).
export CYBULDE_DATASETS_DIR ?= $(abspath ../shared/datasets)
PYTEST_ARGS ?=
# make report BASE=main [HEAD=<rev>]: what a change does to params, metrics and plots (HEAD: the working tree).
BASE ?= main
HEAD ?= workspace

.PHONY: venv publish-default pipeline test test-fast repro-check report lint lock clean

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.lock pyproject.toml scripts/install.sh
	scripts/install.sh $(VENV)
	touch $@

# The default dataset version (params.yaml: data.*), published unless the registry has it.
publish-default: venv
	cybulde publish --source tweeteval_offensive --version v2 --if-missing

pipeline: publish-default
	dvc repro
	dvc metrics show

test: venv
	python -m pytest $(PYTEST_ARGS)

test-fast: venv
	python -m pytest -m "not slow and not integration" $(PYTEST_ARGS)

repro-check: venv
	scripts/repro_check.sh

# report/report.md (dvc params diff, dvc metrics diff, per-class F1) and report/*.png (plots, base vs head).
report: venv
	python -m cybulde.reproducibility.report --base $(BASE) --head $(HEAD) --out report

lint: venv
	ruff check src stages tests benchmarks scripts
	check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
	check-jsonschema --builtin-schema vendor.compose-spec infra/tracking-server/docker-compose.yml
	hadolint Dockerfile
	shellcheck .ci/run scripts/*.sh infra/*.sh infra/*/*.sh benchmarks/*.sh
	python scripts/results_table.py --check

# Regenerate the exact-version lock from the environment (after changing pyproject.toml).
lock: venv
	{ echo "# Exact versions of every dependency (generated from pyproject.toml: make lock). torch==2.13.0 is the CPU build."; \
	  python -m pip freeze --exclude-editable | sed 's/^torch==\(.*\)+cpu$$/torch==\1/'; } > requirements.lock

clean:
	rm -rf .cybulde data/fetched model predictions report
