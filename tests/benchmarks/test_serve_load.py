"""benchmarks/serve_load.py at a tiny size: a real server under concurrent clients, predict beside the
HF pipeline, and the figures it prints."""

from __future__ import annotations

import pytest

from tests.helpers.script_module import load_script
from tests.helpers.tiny_model import make_data_dir, make_model_dir


def test_percentiles_are_read_from_the_sorted_latencies():
    benchmark = load_script("benchmarks/serve_load.py")
    latencies = [0.1 * value for value in range(100, 0, -1)]  # 10.0 ... 0.1 s, shuffled order irrelevant
    assert benchmark.percentile(latencies, 0.50) == pytest.approx(5.0)
    assert benchmark.percentile(latencies, 0.95) == pytest.approx(9.5)
    assert benchmark.percentile(latencies, 0.99) == pytest.approx(9.9)
    assert benchmark.percentile([0.3], 0.99) == pytest.approx(0.3)


@pytest.mark.slow
def test_a_tiny_run_reports_load_and_throughput(tmp_path, capsys):
    import json

    benchmark = load_script("benchmarks/serve_load.py")
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(f"tweet {i} &amp; idiot\tloser" if i % 3 else f"a sunny day {i}" for i in range(30)))
    model_dir = make_model_dir(tmp_path / "model", make_data_dir(tmp_path / "data"))
    report = benchmark.main(["--model", str(model_dir), "--texts-file", str(texts), "--texts", "20",
                             "--clients", "3", "--seconds", "3", "--rows-per-request", "4", "--hf-precisions", "fp32",
                             "--batch-size", "8"])

    assert json.loads(capsys.readouterr().out) == report
    load = report["load"]
    assert load["errors"] == 0 and load["first_error"] is None
    assert load["requests"] >= 3 and load["requests_per_s"] == pytest.approx(load["requests"] / load["seconds"], rel=0.02)
    assert load["texts_per_s"] == pytest.approx(4 * load["requests_per_s"], rel=0.02)
    assert 0 < load["latency_ms"]["p50"] <= load["latency_ms"]["p95"] <= load["latency_ms"]["p99"]
    throughput = report["throughput"]
    assert throughput["texts"] == 20 and "cores" in throughput["cpu"]
    predict, hf = throughput["cybulde_predict"], throughput["hf_pipeline_fp32"]
    assert predict["texts_per_s_with_startup"] > 0 and hf["texts_per_s"] > 0
    assert throughput["ratio_vs_hf_fp32"]["scoring"] == pytest.approx(predict["texts_per_s_scoring"] / hf["texts_per_s"],
                                                                      abs=0.01)
