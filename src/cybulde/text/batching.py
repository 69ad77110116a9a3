"""Cutting token-id rows into batches and padding them; kept free of Lightning so scoring raw text
imports it cheaply."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch


def length_sorted_batches(lengths: Sequence[int] | np.ndarray, batch_size: int) -> list[list[int]]:
    """Row positions shortest first (equal lengths in row order), cut into batches of `batch_size`.

    Every batch is padded to its own longest row, so rows of similar length together pad little. It
    is the one batching of inference (the evaluation stages, `predict`, the served model): the same
    rows at the same batch size meet the same batches and padding whichever of them scores them.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = np.argsort(np.asarray(lengths, dtype=np.int64), kind="stable").tolist()
    return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]


class PadCollator:
    """Pads a list of rows to the longest one: input_ids, attention_mask, labels, index tensors.

    Rows of a multi-label split (`labels`: one answer per question, `source`) give `labels` int64
    `[B, Q]` (-1 missing) and `source` int64 `[B]`; single-label rows (`label`) give `labels` `[B]`.
    """

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        width = max(len(row["input_ids"]) for row in rows)
        input_ids = np.full((len(rows), width), self.pad_token_id, dtype=np.int64)
        attention_mask = np.zeros((len(rows), width), dtype=np.int64)
        for position, row in enumerate(rows):
            input_ids[position, : len(row["input_ids"])] = row["input_ids"]
            attention_mask[position, : len(row["input_ids"])] = 1
        batch = {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(attention_mask)}
        if "labels" in rows[0]:
            batch["labels"] = torch.from_numpy(np.stack([row["labels"] for row in rows]).astype(np.int64))
            batch["source"] = torch.tensor([int(row["source"]) for row in rows], dtype=torch.long)
        else:
            batch["labels"] = torch.tensor([int(row["label"]) for row in rows], dtype=torch.long)
        batch["index"] = torch.tensor([int(row["index"]) for row in rows], dtype=torch.long)
        return batch
