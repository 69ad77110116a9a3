from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from cybulde.data.datamodule import PadCollator, ShardedBatchSampler, TextDataModule

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


def test_start_batch_resumes_the_first_epoch_only() -> None:
    full = epoch_batches(2, 1, epoch=3)
    sampler = ShardedBatchSampler(LENGTHS, 8, 1, 2, 1, True, mega_chunk_steps=4, start_batch=5)
    sampler.set_epoch(3)
    assert list(sampler) == full[5:]  # the batches an uninterrupted epoch would still draw
    assert len(sampler) == len(full)  # the epoch's length is unchanged
    assert list(sampler) == full  # the next iteration is a whole epoch again

