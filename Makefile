# Quick start:  make pipeline   (sets up .venv, publishes the default dataset version, runs dvc repro)
#               make test       (the test suite; CI runs it through .ci/run)
#               make image      (the training image, with docker or podman: infra/image/README.md)
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
# make preview S="model.head=sigmoid train.lr=0.001": the overrides an experiment would apply.
S ?=
# make params-diff [REV=<rev>]: params.yaml against a revision (default HEAD).
REV ?= HEAD
# make image [IMAGE=cybulde:latest] [PYTHON_IMAGE=...] [IMAGE_OPTIONS="--offline-base --host-pip ..."]
IMAGE ?= cybulde:latest
PYTHON_IMAGE ?=
IMAGE_OPTIONS ?=

.PHONY: venv publish-default pipeline test test-fast image repro-check report experiments preview params-diff \
	plots lint lock clean

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.lock pyproject.toml scripts/install.sh scripts/compile_bytecode.py scripts/bytecode-dirs.txt
	scripts/install.sh $(VENV)
	touch $@

# The default dataset version (params.yaml: data.*), published unless the registry has it.
publish-default: venv
	cybulde publish --source tweeteval_offensive --version v2 --if-missing

pipeline: publish-default
	dvc repro
	dvc metrics show

# The install byte-compiles what the pipeline imports; the tests' processes import more (the
# MLflow server, pytest, the storage emulator), so the rest is compiled once before they run.
$(VENV)/.bytecode-all: $(VENV)/.installed scripts/compile_bytecode.py
	python scripts/compile_bytecode.py
	touch $@

test: venv $(VENV)/.bytecode-all
	python -m pytest $(PYTEST_ARGS)

test-fast: venv $(VENV)/.bytecode-all
	python -m pytest -m "not slow and not integration and not container" $(PYTEST_ARGS)

# The training image (Dockerfile) with docker where its engine answers, else podman.
image:
	infra/image/build.sh --tag "$(IMAGE)" $(if $(PYTHON_IMAGE),--python-image "$(PYTHON_IMAGE)") $(IMAGE_OPTIONS)

repro-check: venv
	scripts/repro_check.sh

# report/report.md (dvc params diff, dvc metrics diff, per-class F1) and report/*.png (plots, base vs head).
report: venv
	python -m cybulde.reproducibility.report --base $(BASE) --head $(HEAD) --out report

# The experiments table that fits 120 columns: validation and test macro-F1 and the params that differ
# between the experiments (the second view in the README's Experiments section).
experiments: venv
	dvc exp show --only-changed --keep 'metrics/(validation|test)\.json:macro_f1$$' \
	    --drop '(?!Experiment$$|(data|model|train|launch|evaluation)\.|metrics/(validation|test)\.json:macro_f1$$)'

# The params an experiment changes and the stages it would run, worked out in a scratch copy: the
# workspace stays as it is (`dvc exp run --dry` rewrites params.yaml, dvc.lock, metrics and plots).
preview: venv
	python scripts/preview.py $(S)

# `dvc params diff` prints nothing when nothing changed; this says so.
params-diff: venv
	@diff=$$(dvc params diff $(REV)) && echo "$${diff:-params.yaml: no change against $(REV)}"

# dvc_plots/index.html: the page renders offline (.dvc/plots/index.html carries Vega).
plots: venv
	dvc plots show

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
