"""A Lightning DataModule over a fetched (or published) dataset version's Parquet splits.

Texts are already tokenized, so the training loop only pads: each batch is padded to its own
longest row (dynamic padding). Training batches are made by `ShardedBatchSampler`:

- every epoch, all ranks draw the same seeded permutation (seed + epoch) of the training rows;
- with `group_by_length`, the permutation is cut into mega-chunks of `batch_size * world_size *
  MEGA_CHUNK_STEPS` rows and each chunk is sorted by length, so rows of similar length share a batch;
- rows are cut into global steps of `batch_size * world_size` rows, each step into `world_size`
  equal per-rank batches (rank r takes the r-th), and the order of the steps is shuffled;
- the permutation is first padded by repeating its first rows up to a multiple of `world_size`,
  so every rank gets the same number of rows and of batches (like `DistributedSampler`).

The shard of a rank is therefore a function of (seed, epoch, world_size, rank) only. The Trainer
must be created with `use_distributed_sampler=False`; Lightning calls `set_epoch` on the
sampler each epoch. Validation (`val_dataloader`) is *not* sharded: every rank sees the whole
validation split in order. `eval_dataloader(split)` is ordered and unsharded too.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from cybulde.data.batching import PadCollator
from cybulde.data.manifest import SPLITS, Manifest

MEGA_CHUNK_STEPS = 50


def _lightning_base() -> type:
    import lightning.pytorch as pl

    return pl.LightningDataModule


class TokenizedSplit:
    """One split in memory: token ids per row (int32 arrays), labels, ids and texts."""

    def __init__(self, path: Path) -> None:
        import pyarrow.parquet as pq

        table = pq.read_table(path, columns=["id", "text", "label", "input_ids"])
        column = table.column("input_ids").combine_chunks()
        offsets = column.offsets.to_numpy()
        values = column.values.to_numpy(zero_copy_only=False).astype(np.int32, copy=False)
        self.input_ids = [values[start:end] for start, end in zip(offsets[:-1], offsets[1:], strict=True)]
        self.lengths = np.diff(offsets).astype(np.int64)
        self.labels = table.column("label").to_numpy().astype(np.int64)
        self.ids = table.column("id").to_pylist()
        self.texts = table.column("text").to_pylist()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"input_ids": self.input_ids[index], "label": self.labels[index], "index": index}


class _EpochCounter:
    """Lightning calls `set_epoch` on `dataloader.batch_sampler.sampler`: this object is that."""

    def __init__(self) -> None:
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch


class ShardedBatchSampler:
    """Per-rank batches of row positions for one epoch; see the module docstring."""

    def __init__(self, lengths: np.ndarray, batch_size: int, seed: int, world_size: int = 1, rank: int = 0,
                 group_by_length: bool = False, mega_chunk_steps: int = MEGA_CHUNK_STEPS) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if len(lengths) == 0:
            raise ValueError("cannot batch an empty split")
        self.lengths = np.asarray(lengths)
        self.batch_size, self.seed = batch_size, seed
        self.world_size, self.rank = world_size, rank
        self.group_by_length, self.mega_chunk_steps = group_by_length, mega_chunk_steps
        self.sampler = _EpochCounter()

    @property
    def epoch(self) -> int:
        return self.sampler.epoch

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    @property
    def rows_per_rank(self) -> int:
        return -(-len(self.lengths) // self.world_size)

    def __len__(self) -> int:
        return -(-self.rows_per_rank // self.batch_size)

    def global_steps(self) -> list[np.ndarray]:
        """This epoch's steps, each the rows of all ranks (rank r's batch is the r-th equal part)."""
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self.lengths))
        padded_size = self.rows_per_rank * self.world_size
        order = np.resize(order, padded_size)  # repeats the first rows to even out the ranks
        step_rows = self.batch_size * self.world_size
        if self.group_by_length:
            chunk = step_rows * self.mega_chunk_steps
            order = np.concatenate([
                part[np.argsort(-self.lengths[part], kind="stable")]
                for part in np.split(order, range(chunk, padded_size, chunk))])
        steps = np.split(order, range(step_rows, padded_size, step_rows))
        return [steps[position] for position in rng.permutation(len(steps))]

    def __iter__(self) -> Iterator[list[int]]:
        for step in self.global_steps():
            yield np.split(step, self.world_size)[self.rank].tolist()


class TextDataModule(_lightning_base()):  # type: ignore[misc]
    """Batches of a tokenized dataset version; see the module docstring for sharding semantics.

    `world_size`/`rank` are used when no Trainer is attached; under a Trainer its world size and
    global rank are used.
    """

    def __init__(self, data_dir: str | Path, batch_size: int, seed: int, group_by_length: bool = True,
                 num_workers: int = 0, world_size: int = 1, rank: int = 0,
                 eval_batch_size: int | None = None) -> None:
        super().__init__()
        self.data_dir = Path(data_dir)
        self.manifest = Manifest.load(self.data_dir)
        self.label_names = list(self.manifest.label_names)
        self.num_labels = self.manifest.num_labels
        self.pad_token_id = self.manifest.tokenizer.pad_token_id
        self.batch_size, self.seed, self.group_by_length = batch_size, seed, group_by_length
        self.num_workers = num_workers
        self.world_size, self.rank = world_size, rank
        self.eval_batch_size = eval_batch_size or batch_size
        self._splits: dict[str, TokenizedSplit] = {}

    # ---- data ---------------------------------------------------------------------------------

    def split(self, name: str) -> TokenizedSplit:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {', '.join(SPLITS)}")
        if name not in self._splits:
            self._splits[name] = TokenizedSplit(self.data_dir / f"{name}.parquet")
        return self._splits[name]

    def split_labels(self, split: str) -> np.ndarray:
        return self.split(split).labels

    def split_ids(self, split: str) -> list[str]:
        return self.split(split).ids

    def split_texts(self, split: str) -> list[str]:
        return self.split(split).texts

    def setup(self, stage: str | None = None) -> None:
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            self.world_size, self.rank = trainer.world_size, trainer.global_rank

    # ---- loaders ------------------------------------------------------------------------------

    def train_batch_sampler(self) -> ShardedBatchSampler:
        return ShardedBatchSampler(self.split("train").lengths, self.batch_size, self.seed, self.world_size,
                                   self.rank, self.group_by_length)

    def train_dataloader(self):  # noqa: ANN201 - torch DataLoader
        from torch.utils.data import DataLoader

        return DataLoader(self.split("train"), batch_sampler=self.train_batch_sampler(),
                          collate_fn=PadCollator(self.pad_token_id), num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)

    def val_dataloader(self):  # noqa: ANN201
        return self.eval_dataloader("validation")

    def test_dataloader(self):  # noqa: ANN201
        return self.eval_dataloader("test")

    def eval_dataloader(self, split: str, batch_size: int | None = None):  # noqa: ANN201
        """All rows of `split` in order, unsharded (every rank sees all of them)."""
        from torch.utils.data import DataLoader

        return DataLoader(self.split(split), batch_size=batch_size or self.eval_batch_size, shuffle=False,
                          collate_fn=PadCollator(self.pad_token_id), num_workers=self.num_workers)
