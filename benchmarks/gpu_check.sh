#!/usr/bin/env bash
# GPU check, for one machine with NVIDIA GPUs (written for one H100/H200; about 10 minutes there):
#
#   1. install the CUDA build of the pinned torch (torch==2.13.0) and the locked dependencies into a
#      fresh venv (default .venv-gpu; --skip-install reuses it);
#   2. training benchmark on the GPU in bf16 (benchmarks/train_throughput.py: a bare step, the HF
#      Trainer and ours in one process), with samples/s and an MFU estimate (benchmarks/gpu_report.py);
#   3. the default pipeline (fetch, train, validate, test) with launch.accelerator=gpu and
#      launch.nproc_per_node=<GPUs used> in a copy of the project, its test macro-F1 next to the
#      CPU run's committed metrics/test.json.
#
#   benchmarks/gpu_check.sh [--gpus N] [--cuda cu128] [--venv DIR] [--skip-install] [--out DIR]
#
# Needs: nvidia-smi and a driver for the CUDA build, python3.11, PyPI and download.pytorch.org (for
# the install step), the raw datasets ($CYBULDE_DATASETS_DIR, default ../shared/datasets). With
# --gpus 2 or more the pipeline trains with DDP over NCCL. Figures go to $out (default
# .cybulde/gpu-check): throughput.json, summary.json and the pipeline copy with its metrics.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

gpus=1
cuda=cu128
venv=.venv-gpu
install=1
out=.cybulde/gpu-check
while (($#)); do
    case "$1" in
        --gpus) gpus=$2; shift 2 ;;
        --cuda) cuda=$2; shift 2 ;;
        --venv) venv=$2; shift 2 ;;
        --skip-install) install=0; shift ;;
        --out) out=$2; shift 2 ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        *) echo "gpu_check: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export CYBULDE_DATASETS_DIR="${CYBULDE_DATASETS_DIR:-$(cd .. && pwd)/shared/datasets}"
started=$SECONDS
step() { printf '\n=== %s (%ds)\n' "$1" $((SECONDS - started)); }

if ! command -v nvidia-smi >/dev/null; then
    echo "gpu_check: nvidia-smi not found; this check needs an NVIDIA GPU and its driver" >&2
    exit 2
fi
gpu_name=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1)
visible=$(nvidia-smi --query-gpu=name --format=csv,noheader | wc -l)
if ((gpus > visible)); then
    echo "gpu_check: --gpus $gpus but nvidia-smi lists $visible GPU(s)" >&2
    exit 2
fi
echo "GPU: $gpu_name ($visible visible, using $gpus)"
mkdir -p "$out"
out=$(cd "$out" && pwd)

step "1/3 torch==2.13.0 ($cuda build) and the locked dependencies in $venv"
if ((install)); then
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --upgrade "pip==26.3"
    "$venv/bin/python" -m pip install --quiet "torch==2.13.0" --index-url "https://download.pytorch.org/whl/$cuda"
    grep -v '^torch==' requirements.lock > "$out/requirements-without-torch.txt"
    "$venv/bin/python" -m pip install --quiet --requirement "$out/requirements-without-torch.txt"
    "$venv/bin/python" -m pip install --quiet --no-deps --editable .
fi
if [[ "$venv" = /* ]]; then
    python="$venv/bin/python"
else
    python="$repo/$venv/bin/python"
fi
"$python" - <<'EOF'
import torch

assert torch.__version__.startswith("2.13.0"), torch.__version__
assert torch.cuda.is_available() and torch.version.cuda, "this torch build cannot use the GPU"
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}) on {torch.cuda.get_device_name(0)}, "
      f"bf16 {'supported' if torch.cuda.is_bf16_supported() else 'NOT supported'}")
EOF
PATH="$(dirname "$python"):$PATH"
export PATH

step "2/3 the default dataset version, fetched into a copy of the project; the training benchmark"
registry="$repo/registry"
cybulde publish --source tweeteval_offensive --version v1 --registry "$registry" --if-missing
project="$out/project"
rm -rf "$project"
"$python" - "$repo" "$project" "$registry" "$gpus" "$out" <<'EOF'
import sys
from pathlib import Path

from cybulde.reproducibility.check import copy_project, set_params

repo, project, registry, gpus, out = sys.argv[1:]
copy_project(Path(repo), Path(project))
set_params(Path(project) / "params.yaml", [
    f"data.registry={registry}", "launch.accelerator=gpu", f"launch.nproc_per_node={gpus}",
    f"mlflow.tracking_uri=sqlite:///{out}/mlflow.db"])
EOF
(cd "$project" && python stages/fetch.py)

python benchmarks/train_throughput.py --data-dir "$project/data/fetched" --accelerator gpu --precision bf16-mixed \
    --modes ceiling-bf16,hf-grouped,ours-1proc,ours-dense-torch --batch-size 32 --steps 300 --warmup-steps 30 \
    --threads "$(nproc)" --json "$out/throughput.json"

step "3/3 the default pipeline on $gpus GPU(s) (launch.accelerator=gpu)"
(cd "$project" && dvc repro --force test) 2>&1 | tee "$out/pipeline.log"

step "figures"
python benchmarks/gpu_report.py --throughput "$out/throughput.json" --data-dir "$project/data/fetched" \
    --gpu "$gpu_name" --cpu-test "$repo/metrics/test.json" --gpu-test "$project/metrics/test.json" \
    --json "$out/summary.json"
grep -h "runs as\|inference in" "$out/pipeline.log" || true
step "done: $out/summary.json"
