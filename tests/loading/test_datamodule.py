from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from cybulde.loading.datamodule import EvalShardSampler, PadCollator, ShardedBatchSampler, TextDataModule

LENGTHS = np.random.default_rng(0).integers(3, 120, size=203)


def epoch_batches(world_size: int, rank: int, epoch: int = 0, seed: int = 1, group: bool = True,
                  batch_size: int = 8, lengths: np.ndarray = LENGTHS) -> list[list[int]]:
    sampler = ShardedBatchSampler(lengths, batch_size, seed, world_size, rank, group, mega_chunk_steps=4)
    sampler.set_epoch(epoch)
    return list(sampler)


@pytest.mark.parametrize("group", [True, False])
@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_shards_are_disjoint_covering_and_equal(world_size: int, group: bool) -> None:
    shards = [epoch_batches(world_size, rank, group=group) for rank in range(world_size)]
    assert len({len(batches) for batches in shards}) == 1  # equal number of batches on every rank
    for step in zip(*shards, strict=True):
        assert len({len(batch) for batch in step}) == 1  # and equal batch sizes at each step
    rows = [row for batches in shards for batch in batches for row in batch]
    counts = Counter(rows)
    assert set(counts) == set(range(len(LENGTHS)))  # covering
    padding = -len(LENGTHS) % world_size
    assert len(rows) == len(LENGTHS) + padding and sum(c - 1 for c in counts.values()) == padding
    assert len(shards[0]) == len(ShardedBatchSampler(LENGTHS, 8, 1, world_size, 0))


def test_disjoint_when_divisible() -> None:
    lengths = LENGTHS[:200]
    shards = [{row for batch in epoch_batches(4, rank, lengths=lengths) for row in batch} for rank in range(4)]
    assert sum(len(shard) for shard in shards) == 200 and len(set().union(*shards)) == 200


def test_order_is_a_function_of_seed_epoch_and_rank() -> None:
    assert epoch_batches(2, 0) == epoch_batches(2, 0)
    assert epoch_batches(2, 0) != epoch_batches(2, 0, epoch=1)
    assert epoch_batches(2, 0) != epoch_batches(2, 0, seed=2)
    assert epoch_batches(2, 0) != epoch_batches(2, 1)


def padded_tokens(batches: list[list[int]]) -> int:
    return sum(len(batch) * int(LENGTHS[batch].max()) for batch in batches)


def test_grouping_by_length_reduces_padding() -> None:
    grouped = padded_tokens(epoch_batches(1, 0, group=True))
    plain = padded_tokens(epoch_batches(1, 0, group=False))
    assert grouped < 0.8 * plain and grouped >= LENGTHS.sum()
    first_batches = [batch[0] for batch in epoch_batches(1, 0, group=True)[:5]]
    assert first_batches != sorted(first_batches)  # batches are shuffled, not in length order


def test_collator_pads_dynamically() -> None:
    rows = [{"input_ids": np.array([101, 5, 102], dtype=np.int32), "label": 1, "index": 7},
            {"input_ids": np.array([101, 102], dtype=np.int32), "label": 0, "index": 2}]
    batch = PadCollator(pad_token_id=9)(rows)
    assert batch["input_ids"].tolist() == [[101, 5, 102], [101, 102, 9]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].tolist() == [1, 0] and batch["index"].tolist() == [7, 2]


def test_datamodule_over_a_published_version(published_registry: Path) -> None:
    import torch

    data_dir = published_registry / "tweeteval_offensive" / "v1"
    module = TextDataModule(data_dir, batch_size=4, seed=3, group_by_length=True, world_size=2, rank=1)
    assert module.num_labels == 2 and module.label_names == ["not-offensive", "offensive"]
    assert module.manifest.dataset == "tweeteval_offensive"
    loader = module.train_dataloader()
    batches = list(loader)
    assert len(batches) == len(loader) == 5  # 38 rows / 2 ranks = 19 rows -> 5 batches of <= 4
    for batch in batches:
        assert batch["input_ids"].dtype == torch.long and batch["labels"].dtype == torch.long
        assert batch["input_ids"].shape == batch["attention_mask"].shape
        assert batch["attention_mask"][:, -1].any()  # padded to the longest row of this batch only
        assert (batch["input_ids"][batch["attention_mask"] == 0] == module.pad_token_id).all()
        labels = module.split_labels("train")[batch["index"].numpy()]
        assert batch["labels"].tolist() == labels.tolist()

    # the evaluation's batches: every row once, shortest first, each row with its own label
    evaluated = list(module.eval_dataloader("validation", batch_size=5))
    assert [len(b["index"]) for b in evaluated] == [5, 5, 1]
    index = torch.cat([b["index"] for b in evaluated])
    assert sorted(index.tolist()) == list(range(11))
    row_lengths = torch.cat([b["attention_mask"].sum(dim=1) for b in evaluated]).tolist()
    assert row_lengths == sorted(row_lengths)
    assert torch.cat([b["labels"] for b in evaluated]).tolist() == module.split_labels("validation")[index.numpy()].tolist()
    assert len(module.split_ids("test")) == len(module.split_texts("test")) == 10


def test_lightning_sets_the_epoch(published_registry: Path) -> None:
    from lightning.fabric.utilities.data import _set_sampler_epoch

    module = TextDataModule(published_registry / "tweeteval_offensive" / "v1", 4, seed=3, group_by_length=False)
    loader = module.train_dataloader()
    first = [b["index"].tolist() for b in loader]
    _set_sampler_epoch(loader, 1)
    assert loader.batch_sampler.epoch == 1
    second = [b["index"].tolist() for b in loader]
    assert first != second and sorted(sum(first, [])) == sorted(sum(second, [])) == list(range(38))


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_validation_shards_score_every_row_exactly_once(world_size: int) -> None:
    shards = [list(EvalShardSampler(LENGTHS, 8, world_size, rank)) for rank in range(world_size)]
    rows = [row for batches in shards for batch in batches for row in batch]
    assert sorted(rows) == list(range(len(LENGTHS)))  # no row twice, no padding rows, none left out
    sizes = [sum(len(batch) for batch in batches) for batches in shards]
    assert sizes == [len(range(rank, 203, world_size)) for rank in range(world_size)]  # 203 rows, strided
    for rank, batches in enumerate(shards):
        assert len(batches) == len(EvalShardSampler(LENGTHS, 8, world_size, rank)) == -(-sizes[rank] // 8)
        assert all(row % world_size == rank for batch in batches for row in batch)
        lengths = [int(LENGTHS[row]) for batch in batches for row in batch]
        assert lengths == sorted(lengths, reverse=True)  # longest first: little padding per batch


def test_validation_split_smaller_than_the_world_is_an_error() -> None:
    from cybulde.errors import CybuldeError
    from cybulde.loading.datamodule import EvalShardingError

    with pytest.raises(EvalShardingError, match="3 rows over 4 ranks") as raised:
        EvalShardSampler(LENGTHS[:3], 8, world_size=4, rank=0)
    assert isinstance(raised.value, CybuldeError)  # a stage reports it in one line


def test_val_dataloader_is_sharded_and_eval_dataloader_is_not(published_registry: Path) -> None:
    import torch

    data_dir = published_registry / "tweeteval_offensive" / "v1"
    seen = []
    for rank in range(2):
        module = TextDataModule(data_dir, batch_size=4, seed=3, world_size=2, rank=rank)
        batches = list(module.val_dataloader())
        seen.append(torch.cat([batch["index"] for batch in batches]).tolist())
        for batch in batches:
            labels = module.split_labels("validation")[batch["index"].numpy()]
            assert batch["labels"].tolist() == labels.tolist()
        evaluated = torch.cat([b["index"] for b in module.eval_dataloader("validation")]).tolist()
        assert sorted(evaluated) == list(range(11))  # not sharded: every rank gets every row
    assert len(seen[0]) == 6 and len(seen[1]) == 5  # 11 validation rows: 6 + 5, nothing repeated
    assert sorted(seen[0] + seen[1]) == list(range(11))


# ---- sharded versions, the memory-mapped token cache, format-1 versions ---------------------------

FORMAT1_VERSION = Path(__file__).parents[1] / "registry" / "fixtures" / "registry-format1" / "davidson2017" / "v1"


@pytest.fixture(scope="module")
def sharded_version(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A csv dataset published with 9 rows per shard (~24 train shards)."""
    from cybulde.preparation.publish import publish
    from tests.helpers.raw_data import write_generic_csv

    root = tmp_path_factory.mktemp("sharded")
    raw = write_generic_csv(root / "raw.csv", rows=270)
    publish("csv", raw, str(root / "registry"), "v1", dataset="d", text_column="comment", label_column="verdict",
            rows_per_shard=9, max_length=16, echo=None)
    return root / "registry" / "d" / "v1"


def parquet_rows(data_dir: Path, split: str) -> dict[str, list]:
    """The split's rows read straight from its shard files (not through the data module)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from cybulde.registry.manifest import Manifest, files_dir

    manifest = Manifest.load(data_dir)
    paths = [files_dir(data_dir) / shard.path for shard in manifest.split_shards(split)]
    return pa.concat_tables([pq.read_table(path) for path in paths]).to_pydict()


def test_mapped_rows_equal_the_shards(sharded_version: Path, tmp_path: Path) -> None:
    from cybulde.registry.manifest import Manifest

    assert len(Manifest.load(sharded_version).split_shards("train")) > 10
    module = TextDataModule(sharded_version, batch_size=4, seed=0, cache_dir=tmp_path)
    for split in ("train", "validation", "test"):
        expected = parquet_rows(sharded_version, split)
        mapped = module.split(split)
        assert len(mapped) == len(expected["id"])
        assert [mapped[i]["input_ids"].tolist() for i in range(len(mapped))] == expected["input_ids"]
        assert [int(mapped[i]["label"]) for i in range(len(mapped))] == expected["label"]
        assert mapped.lengths.tolist() == [len(ids) for ids in expected["input_ids"]]
        assert module.split_ids(split) == expected["id"] and module.split_texts(split) == expected["text"]
    with pytest.raises(IndexError):
        module.split("test")[len(module.split("test"))]


def test_token_cache_is_keyed_by_content_and_reused(sharded_version: Path, tmp_path: Path) -> None:
    import pickle

    module = TextDataModule(sharded_version, batch_size=4, seed=0, cache_dir=tmp_path)
    mapped = module.split("train")
    cached = sorted(path.name for path in tmp_path.glob("*.arrow"))
    assert cached == [mapped.path.name] and mapped.path.name.startswith("train-")
    stamp = mapped.path.stat().st_mtime_ns
    again = TextDataModule(sharded_version, batch_size=4, seed=0, cache_dir=tmp_path).split("train")
    assert again.path == mapped.path and mapped.path.stat().st_mtime_ns == stamp  # not rewritten
    copy = pickle.loads(pickle.dumps(mapped))  # DataLoader workers map the file themselves
    assert copy[5]["input_ids"].tolist() == mapped[5]["input_ids"].tolist() and len(copy) == len(mapped)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("world_size", [2, 3])
def test_ddp_shards_of_a_sharded_version(sharded_version: Path, tmp_path: Path, world_size: int) -> None:
    """Each rank's batches are disjoint (up to the padding rows), cover the split, are equally many and
    carry exactly the rows of the Parquet shards at the sampled positions."""
    expected = parquet_rows(sharded_version, "train")
    seen, batch_counts = [], set()
    for rank in range(world_size):
        module = TextDataModule(sharded_version, batch_size=4, seed=2, world_size=world_size, rank=rank,
                                cache_dir=tmp_path)
        batches = list(module.train_dataloader())
        batch_counts.add(len(batches))
        for batch in batches:
            for row, index in enumerate(batch["index"].tolist()):
                ids = batch["input_ids"][row][batch["attention_mask"][row] == 1].tolist()
                assert ids == expected["input_ids"][index] and batch["labels"][row] == expected["label"][index]
            seen += batch["index"].tolist()
    rows = len(expected["id"])
    assert len(batch_counts) == 1 and sorted(set(seen)) == list(range(rows))
    assert len(seen) == rows + (-rows % world_size)


def test_a_format1_version_loads_and_batches(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    module = TextDataModule(FORMAT1_VERSION, batch_size=8, seed=1, world_size=2, rank=0, cache_dir=tmp_path)
    expected = pq.read_table(FORMAT1_VERSION / "train.parquet").to_pydict()
    assert module.num_labels == 3 and len(module.split("train")) == 72
    batches = list(module.train_dataloader())
    assert len(batches) == 5  # 72 rows / 2 ranks = 36 rows -> 5 batches of <= 8
    for batch in batches:
        for row, index in enumerate(batch["index"].tolist()):
            assert batch["labels"][row] == expected["label"][index]
    assert module.split_ids("validation") == pq.read_table(FORMAT1_VERSION / "validation.parquet").column(
        "id").to_pylist()


WRITE_CACHE = """
import sys
from cybulde.loading.datamodule import TextDataModule
module = TextDataModule(sys.argv[1], batch_size=4, seed=0, cache_dir=sys.argv[2])
print(module.split("train").path, int(module.split("train").lengths.sum()))
"""


@pytest.mark.slow
def test_ranks_converting_at_once_share_one_cache_file(sharded_version: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    processes = [subprocess.Popen([sys.executable, "-c", WRITE_CACHE, str(sharded_version), str(tmp_path)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outputs = [process.communicate(timeout=120) for process in processes]
    assert [process.returncode for process in processes] == [0, 0, 0], [err for _, err in outputs]
    assert len({out for out, _ in outputs}) == 1  # the same file and the same content for every rank
    assert len(list(tmp_path.glob("*.arrow"))) == 1
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    expected = sum(len(ids) for ids in parquet_rows(sharded_version, "train")["input_ids"])
    assert int(outputs[0][0].split()[1]) == expected


def test_start_batch_resumes_the_first_epoch_only() -> None:
    full = epoch_batches(2, 1, epoch=3)
    sampler = ShardedBatchSampler(LENGTHS, 8, 1, 2, 1, True, mega_chunk_steps=4, start_batch=5)
    sampler.set_epoch(3)
    assert list(sampler) == full[5:]  # the batches an uninterrupted epoch would still draw
    assert len(sampler) == len(full)  # the epoch's length is unchanged
    assert list(sampler) == full  # the next iteration is a whole epoch again


def test_start_epoch_draws_that_epochs_batches_before_any_set_epoch() -> None:
    # A loader worker fetches the resumed epoch's first batches before Lightning calls set_epoch.
    resumed = ShardedBatchSampler(LENGTHS, 8, 1, 2, 1, True, mega_chunk_steps=4, start_epoch=3, start_batch=5)
    assert list(resumed) == epoch_batches(2, 1, epoch=3)[5:]
    resumed.set_epoch(4)
    assert list(resumed) == epoch_batches(2, 1, epoch=4)



# ---- multi-label versions and temperature sampling over sources -----------------------------------

SOURCE_COUNTS = (600, 300, 100)  # rows of sources 0, 1, 2
SOURCES = np.random.default_rng(5).permutation(np.repeat(np.arange(3), SOURCE_COUNTS))
SOURCE_LENGTHS = np.random.default_rng(6).integers(3, 60, size=len(SOURCES))


def tempered_batches(temperature: float, world_size: int = 1, rank: int = 0, epoch: int = 0, seed: int = 4,
                     sources: np.ndarray | None = SOURCES, start_batch: int = 0) -> list[list[int]]:
    sampler = ShardedBatchSampler(SOURCE_LENGTHS, 16, seed, world_size, rank, True, mega_chunk_steps=4,
                                  start_batch=start_batch, sources=sources, source_temperature=temperature)
    sampler.set_epoch(epoch)
    return list(sampler)


def rows_of_each_source(batches: list[list[int]]) -> list[int]:
    return np.bincount(SOURCES[[row for batch in batches for row in batch]], minlength=3).tolist()


def test_temperature_one_is_the_plain_permutation_and_gives_the_datas_shares() -> None:
    plain = tempered_batches(1.0, sources=None)
    assert tempered_batches(1.0) == plain  # the same batches as a sampler that knows no sources
    assert rows_of_each_source(plain) == list(SOURCE_COUNTS)  # 60% / 30% / 10%: the data's own shares


def test_a_temperature_flattens_the_sources_shares_as_computed_by_hand() -> None:
    # T = 2: p(s) ∝ sqrt(n_s) = 24.4949, 17.3205, 10 (sum 51.8154) -> 472.73, 334.27, 192.99 of 1000 rows;
    # floors 472 + 334 + 192 = 998, the 2 rows left go to the largest remainders (.99, .73): 473, 334, 193.
    assert rows_of_each_source(tempered_batches(2.0)) == [473, 334, 193]
    # T -> infinity: uniform, 333.3 each (the largest remainder, a tie, goes to the first source).
    assert rows_of_each_source(tempered_batches(1e9)) == [334, 333, 333]
    # T = 0.5 sharpens: n_s^2 = 360000, 90000, 10000 -> 782.61, 195.65, 21.74; floors 782 + 195 + 21 = 998,
    # remainders .61, .65, .74: the 2 rows left go to sources 2 and 1.
    assert rows_of_each_source(tempered_batches(0.5)) == [782, 196, 22]


def test_temperature_sampling_is_seeded_and_sharded_like_the_plain_one() -> None:
    assert tempered_batches(3.0) == tempered_batches(3.0)  # same seed and epoch: the same batches
    assert tempered_batches(3.0) != tempered_batches(3.0, epoch=1)
    assert tempered_batches(3.0) != tempered_batches(3.0, seed=5)
    shards = [tempered_batches(3.0, world_size=3, rank=rank) for rank in range(3)]
    assert len({len(batches) for batches in shards}) == 1  # every rank the same number of batches
    assert len(shards[0]) == len(ShardedBatchSampler(SOURCE_LENGTHS, 16, 4, 3, 0))
    # An over-drawn source (here the smallest, drawn ~1.9 times) goes through all its rows before repeating.
    small = [row for batch in tempered_batches(1e9) for row in batch if SOURCES[row] == 2]
    assert len(set(small)) == SOURCE_COUNTS[2]
    assert tempered_batches(3.0, world_size=2, rank=1, start_batch=7) == tempered_batches(3.0, world_size=2,
                                                                                          rank=1)[7:]


def test_a_temperature_must_be_positive() -> None:
    with pytest.raises(ValueError, match="source_temperature must be > 0"):
        ShardedBatchSampler(SOURCE_LENGTHS, 16, 4, sources=SOURCES, source_temperature=0.0)


@pytest.fixture(scope="module")
def multilabel_version(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.helpers.tiny_data import make_multilabel_data_dir

    return make_multilabel_data_dir(tmp_path_factory.mktemp("multi") / "v1")


def test_multilabel_batches_carry_the_answer_matrix_and_the_source(multilabel_version: Path, tmp_path: Path) -> None:
    import pyarrow.parquet as pq
    import torch

    expected = pq.read_table(multilabel_version / "train.parquet").to_pydict()
    module = TextDataModule(multilabel_version, batch_size=5, seed=1, cache_dir=tmp_path, source_temperature=2.0)
    assert module.is_multilabel and module.source_names == ["alpha", "beta", "gamma"]
    source_index = {"alpha": 0, "beta": 1, "gamma": 2}
    seen = []
    for batch in module.train_dataloader():
        assert batch["labels"].dtype == torch.long and batch["labels"].shape == (len(batch["index"]), 2)
        assert batch["source"].dtype == torch.long and batch["source"].shape == (len(batch["index"]),)
        for row, index in enumerate(batch["index"].tolist()):
            assert batch["labels"][row].tolist() == expected["labels"][index]  # -1 where the source is silent
            assert int(batch["source"][row]) == source_index[expected["source"][index]]
            ids = batch["input_ids"][row][batch["attention_mask"][row] == 1].tolist()
            assert ids == expected["input_ids"][index]
        seen += batch["index"].tolist()
    assert len(seen) == len(expected["id"])  # an epoch keeps the split's number of rows
    assert module.split_labels("train").tolist() == expected["labels"]
    assert module.split_sources("train").tolist() == [source_index[name] for name in expected["source"]]
    assert (module.split_labels("train") == -1).any()


def test_the_multilabel_cache_has_its_own_key_and_the_single_label_key_is_unchanged(tmp_path: Path) -> None:
    import hashlib
    import json

    from cybulde.loading.datamodule import token_cache_path

    key = json.dumps({"format": "input_ids+label/arrow-ipc/v2", "split": "train", "shards": ["ab"], "ids": "uint16"},
                     sort_keys=True)
    single = token_cache_path(tmp_path, "train", ["ab"], "uint16")
    assert single.name == f"train-{hashlib.sha256(key.encode()).hexdigest()[:32]}.arrow"
    multi = token_cache_path(tmp_path, "train", ["ab"], "uint16", ["alpha", "beta"])
    assert multi != single and multi != token_cache_path(tmp_path, "train", ["ab"], "uint16", ["beta", "alpha"])


def test_rows_of_a_source_the_manifest_does_not_name_are_refused(multilabel_version: Path, tmp_path: Path) -> None:
    import shutil

    from cybulde.registry.errors import DataError
    from cybulde.registry.manifest import Manifest

    copy = tmp_path / "v1"
    shutil.copytree(multilabel_version, copy)
    manifest = Manifest.load(copy)
    manifest.source_names = ["alpha", "beta"]
    manifest.write(copy)
    with pytest.raises(DataError, match=r"sources \['gamma'\]"):
        TextDataModule(copy, batch_size=4, seed=0, cache_dir=tmp_path / "cache").split("train")
