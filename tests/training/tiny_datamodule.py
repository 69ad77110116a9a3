"""A stand-in for `cybulde.data.datamodule.TextDataModule` (SPEC API) while that module does not exist."""

from __future__ import annotations

import json
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pyarrow.parquet as pq
import torch


class Batches:
    """A plain iterable (Lightning reads a bare list as several dataloaders)."""

    def __init__(self, batches):
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)

    def __len__(self):
        return len(self.batches)


class TinyDataModule(pl.LightningDataModule):
    def __init__(self, data_dir, batch_size, seed, group_by_length, num_workers=0, world_size=1, rank=0):
        super().__init__()
        self.data_dir = Path(data_dir)
        self.batch_size, self.seed, self.world_size, self.rank = batch_size, seed, world_size, rank
        self.manifest = json.loads((self.data_dir / "manifest.json").read_text())
        self.pad_id = self.manifest["tokenizer"]["pad_token_id"]
        self.label_names = self.manifest["label_names"]
        self.num_labels = len(self.label_names)

    def _rows(self, split):
        table = pq.read_table(self.data_dir / f"{split}.parquet").to_pydict()
        return table["input_ids"], table["label"]

    def split_labels(self, split):
        return np.asarray(self._rows(split)[1])

    def _collate(self, items):
        width = max(len(ids) for _, ids, _ in items)
        input_ids = torch.full((len(items), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(items), width), dtype=torch.long)
        for row, (_, ids, _) in enumerate(items):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            mask[row, : len(ids)] = 1
        return {"input_ids": input_ids, "attention_mask": mask,
                "labels": torch.tensor([label for _, _, label in items]),
                "index": torch.tensor([index for index, _, _ in items])}

    def train_dataloader(self):
        ids, labels = self._rows("train")
        epoch = self.trainer.current_epoch if self.trainer is not None else 0
        order = np.random.default_rng(self.seed + epoch).permutation(len(ids))
        per_rank = len(order) // self.world_size // self.batch_size * self.batch_size
        shard = order[self.rank * per_rank:(self.rank + 1) * per_rank]
        items = [(int(i), ids[i], labels[i]) for i in shard]
        batches = [items[i:i + self.batch_size] for i in range(0, len(items), self.batch_size)]
        return Batches([self._collate(batch) for batch in batches])

    def val_dataloader(self):
        return self.eval_dataloader("validation", self.batch_size)

    def eval_dataloader(self, split, batch_size):
        ids, labels = self._rows(split)
        items = [(i, ids[i], labels[i]) for i in range(len(ids))]
        return Batches([self._collate(items[i:i + batch_size]) for i in range(0, len(items), batch_size)])
