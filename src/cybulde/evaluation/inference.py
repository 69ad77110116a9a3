"""Batched, gradient-free inference over the tokenized rows of a split (the evaluation stages).

`collect_outputs` runs the model over a DataLoader of padded batches through the same forward pass
as every other scoring path (`cybulde.serving.scorer.model_logits`: inference mode, bf16 autocast
when the precision says so). Raw text is scored by `cybulde.serving.scorer.TextScorer`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch

from cybulde.hardware import FP32
from cybulde.models.heads import MISSING
from cybulde.serving.scorer import model_logits, pick_device


@dataclass
class SplitOutputs:
    """The model's outputs over a whole split, in row order of the split."""

    logits: torch.Tensor  # [N, num_outputs], float32
    labels: torch.Tensor  # [N] class indices, or [N, questions] answers (MISSING where not asked)
    loss: float  # mean over examples (multi-label: over the present answers)


def collect_outputs(model: Any, batches: Iterable[dict[str, Any]], num_rows: int,
                    device: torch.device | None = None, precision: str = FP32) -> SplitOutputs:
    """Logits and labels for every row of a split; rows are placed by the batches' `index`.

    `precision` is a resolved one (32-true or bf16-mixed, see `cybulde.hardware.resolve_precision`).
    The loss is each batch's mean weighted by what it averaged over: its rows, or for a multi-label
    model its present answers (the head's masked loss).
    """
    device = device or pick_device()
    model.eval()
    model.to(device)
    logits_by_row: torch.Tensor | None = None
    labels_by_row: torch.Tensor | None = None
    seen = torch.zeros(num_rows, dtype=torch.bool)
    loss_sum, weight_sum = 0.0, 0
    for batch in batches:
        labels = batch["labels"]
        logits = model_logits(model, batch["input_ids"], batch["attention_mask"], precision, device)
        weight = int((labels != MISSING).sum())
        if weight:
            with torch.inference_mode():
                loss_sum += float(model.head.loss(logits, labels)) * weight
            weight_sum += weight
        if logits_by_row is None:
            logits_by_row = torch.zeros((num_rows, logits.shape[1]), dtype=torch.float32)
            labels_by_row = torch.full((num_rows, *labels.shape[1:]), MISSING, dtype=torch.int64)
        index = batch["index"].cpu()
        logits_by_row[index] = logits
        labels_by_row[index] = labels.cpu()
        seen[index] = True
    if logits_by_row is None or labels_by_row is None:
        raise ValueError("the split produced no batches")
    missing = int((~seen).sum())
    if missing:
        raise ValueError(f"the data loader skipped {missing} of {num_rows} rows")
    return SplitOutputs(logits=logits_by_row, labels=labels_by_row, loss=loss_sum / max(weight_sum, 1))
