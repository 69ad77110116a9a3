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

    ordered = list(module.eval_dataloader("validation", batch_size=5))
    assert torch.cat([b["index"] for b in ordered]).tolist() == list(range(11))
    assert torch.cat([b["labels"] for b in ordered]).tolist() == module.split_labels("validation").tolist()
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
        ordered = torch.cat([b["index"] for b in module.eval_dataloader("validation")]).tolist()
        assert ordered == list(range(11))
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

