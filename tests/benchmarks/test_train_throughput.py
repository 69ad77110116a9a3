"""benchmarks/train_throughput.py: reading the workers' results."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "train_throughput.py"


def load_benchmark():
    spec = importlib.util.spec_from_file_location("train_throughput", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_results_of_ranks_sharing_one_stdout_are_all_read():
    benchmark = load_benchmark()
    output = ('log line\nBENCH_RESULT {"mode": "ours-ddp2", "rank": 1}BENCH_RESULT {"mode": "ours-ddp2", "rank": 0}'
              '\n\nmore log\nBENCH_RESULT {"mode": "ours-ddp2", "rank": 2, "peak_rss_mb": [1, 2]}\n')
    assert [result["rank"] for result in benchmark.parse_results(output)] == [1, 0, 2]
    assert benchmark.parse_results("no results here\n") == []
