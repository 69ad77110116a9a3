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


def test_mfu_is_six_flops_per_matmul_parameter_and_token_over_the_peak():
    benchmark = load_benchmark()
    rows = benchmark.with_mfu({"ours-1proc": {"samples_per_s": 100.0, "tokens_per_s": 3000.0}},
                              params=20_000_000, peak_tflops=1.2)
    # by hand: 6 * 2e7 * 3000 = 3.6e11 FLOP/s = 0.36 TFLOP/s, 0.36 / 1.2 = 30%
    assert abs(rows["ours-1proc"]["tflops"] - 0.36) < 1e-12
    assert abs(rows["ours-1proc"]["mfu"] - 0.30) < 1e-12
    assert benchmark.mfu_share(rows["ours-1proc"]) == "30.0%"


def test_each_option_mode_names_every_option_and_differs_from_the_defaults():
    """A mode that leaves an option to the defaults would silently measure something else once they change."""
    from cybulde.config.schema import TrainConfig

    defaults = TrainConfig()
    default_options = {"dropout_masks": defaults.dropout_masks.value, "embedding_updates": defaults.embedding_updates.value,
                       "hidden_states": defaults.hidden_states.value}
    benchmark = load_benchmark()
    option_modes = {mode: options for mode, options in benchmark.OURS_OPTIONS.items() if mode != "ours-1proc"}
    assert benchmark.OURS_OPTIONS["ours-1proc"] == {}
    assert all(set(options) == set(default_options) for options in option_modes.values())
    assert default_options not in option_modes.values()
    assert len({tuple(sorted(options.items())) for options in option_modes.values()}) == len(option_modes)
