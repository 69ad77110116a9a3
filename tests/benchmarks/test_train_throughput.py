"""benchmarks/train_throughput.py: reading the workers' results."""

from __future__ import annotations

from tests.helpers.script_module import load_script


def load_benchmark():
    return load_script("benchmarks/train_throughput.py")


def test_results_of_ranks_sharing_one_stdout_are_all_read():
    benchmark = load_benchmark()
    output = ('log line\nBENCH_RESULT {"mode": "ours-ddp2", "rank": 1}BENCH_RESULT {"mode": "ours-ddp2", "rank": 0}'
              '\n\nmore log\nBENCH_RESULT {"mode": "ours-ddp2", "rank": 2, "peak_rss_mb": [1, 2]}\n')
    assert [result["rank"] for result in benchmark.parse_results(output)] == [1, 0, 2]
    assert benchmark.parse_results("no results here\n") == []
