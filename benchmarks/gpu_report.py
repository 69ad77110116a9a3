"""The figures of benchmarks/gpu_check.sh: MFU of the training benchmark and the GPU pipeline's test
macro-F1 next to the CPU run's.

MFU (model FLOPs utilisation) = achieved FLOP/s / the card's peak dense bf16 tensor FLOP/s, with the
achieved rate estimated as 6 x (the model's matmul parameters) x (non-padding tokens per second):
2 FLOPs per parameter and token forward, 4 backward. Matmul parameters are the weights and biases of
the Linear layers (embedding lookups do no matmul; attention's score matmuls, ~2% at ~30 tokens, are
left out), so the figure is a slight underestimate.

    python benchmarks/gpu_report.py --throughput throughput.json --data-dir data/fetched --gpu "NVIDIA H100 80GB HBM3" \
        --cpu-test metrics/test.json --gpu-test gpu-project/metrics/test.json --json summary.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

# Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s from NVIDIA's data sheets, matched on the name
# nvidia-smi prints; the first matching entry wins, so the more specific names come first.
PEAK_BF16_TFLOPS = (
    ("H200 NVL", 835.0),
    ("H200", 989.5),
    ("H100 NVL", 835.0),
    ("H100 PCIe", 756.0),
    ("H100", 989.5),  # SXM5, e.g. "NVIDIA H100 80GB HBM3"
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
)


def peak_bf16_tflops(gpu_name: str) -> float | None:
    for key, tflops in PEAK_BF16_TFLOPS:
        if key.lower() in gpu_name.lower():
            return tflops
    return None


def matmul_params(model: Any) -> int:
    """Weights and biases of the model's Linear layers."""
    from torch import nn

    return sum(parameter.numel() for module in model.modules() if isinstance(module, nn.Linear)
               for parameter in module.parameters(recurse=False))


def default_model_params(data_dir: Path) -> int:
    """Matmul parameters of the default params' classifier on the data in `data_dir`."""
    from cybulde.config.loader import load_config
    from cybulde.models.classifier import build_classifier
    from cybulde.registry.manifest import Manifest, tokenizer_dir

    cfg = load_config(Path(__file__).resolve().parents[1] / "params.yaml")
    return matmul_params(build_classifier(cfg.model, Manifest.load(data_dir).to_dict(), tokenizer_dir(data_dir)))


def mfu(tokens_per_s: float, params: int, peak_tflops: float) -> float:
    return 6.0 * params * tokens_per_s / (peak_tflops * 1e12)


def throughput_rows(throughput: dict[str, Any], params: int, peak_tflops: float | None) -> list[dict[str, Any]]:
    rows = []
    for mode, row in throughput["rows"].items():
        achieved = 6.0 * params * row["tokens_per_s"] / 1e12
        rows.append({"mode": mode, "samples_per_s": row["samples_per_s"], "tokens_per_s": row["tokens_per_s"],
                     "tflops": achieved, "mfu": mfu(row["tokens_per_s"], params, peak_tflops) if peak_tflops else None})
    return rows


def compare_test_metrics(cpu_test: Path, gpu_test: Path) -> dict[str, float]:
    cpu = json.loads(cpu_test.read_text())["macro_f1"]
    gpu = json.loads(gpu_test.read_text())["macro_f1"]
    return {"cpu_test_macro_f1": cpu, "gpu_test_macro_f1": gpu, "difference": gpu - cpu}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--throughput", type=Path, required=True, help="train_throughput.py --json output")
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--gpu", required=True, help="the card's name, as nvidia-smi prints it")
    parser.add_argument("--peak-tflops", type=float, help="the card's dense bf16 peak (default: from the name)")
    parser.add_argument("--cpu-test", type=Path, help="metrics/test.json of the CPU run")
    parser.add_argument("--gpu-test", type=Path, help="metrics/test.json of the GPU run")
    parser.add_argument("--json", type=Path, help="also write the summary as JSON here")
    args = parser.parse_args(argv)

    peak = args.peak_tflops or peak_bf16_tflops(args.gpu)
    params = default_model_params(args.data_dir)
    rows = throughput_rows(json.loads(args.throughput.read_text()), params, peak)
    print(f"{args.gpu}: peak dense bf16 {f'{peak:g} TFLOP/s' if peak else 'unknown (pass --peak-tflops)'}; "
          f"{params / 1e6:.1f}M matmul parameters, 6 FLOPs per parameter and token")
    print(f"{'mode':<14}{'samples/s':>11}{'tokens/s':>11}{'TFLOP/s':>9}{'MFU':>8}")
    for row in rows:
        share = f"{100 * row['mfu']:.1f}%" if row["mfu"] is not None else "n/a"
        print(f"{row['mode']:<14}{row['samples_per_s']:>11.1f}{row['tokens_per_s']:>11.0f}{row['tflops']:>9.2f}{share:>8}")
    summary: dict[str, Any] = {"gpu": args.gpu, "peak_bf16_tflops": peak, "matmul_params": params, "throughput": rows}
    if args.cpu_test and args.gpu_test:
        summary["pipeline"] = compare_test_metrics(args.cpu_test, args.gpu_test)
        pipeline = summary["pipeline"]
        print(f"default pipeline test macro-F1: GPU {pipeline['gpu_test_macro_f1']:.4f}, CPU "
              f"{pipeline['cpu_test_macro_f1']:.4f} (difference {pipeline['difference']:+.4f})")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
