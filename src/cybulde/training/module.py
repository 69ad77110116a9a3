"""The LightningModule: loss from the model's head, AdamW with warmup + linear decay, macro-F1."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import lightning.pytorch as pl
import torch
from torch import nn

from cybulde.models.classifier import TextClassifier


def inverse_frequency_weights(label_counts: Sequence[int]) -> torch.Tensor:
    """w_c = N / (K * n_c): every class contributes equally to the loss (empty classes count as 1)."""
    counts = torch.tensor([max(int(count), 1) for count in label_counts], dtype=torch.float64)
    return (counts.sum() / (len(counts) * counts)).to(torch.float32)


def optimizer_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on weight matrices only: not on biases, LayerNorm or other norm parameters."""
    no_decay: set[int] = set()
    for module in model.modules():
        if isinstance(module, (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d)):
            no_decay.update(id(parameter) for parameter in module.parameters(recurse=False))
    decay, rest = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        if name.endswith("bias") or id(parameter) in no_decay:
            rest.append(parameter)
        else:
            decay.append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


class ClassifierModule(pl.LightningModule):
    def __init__(self, model: TextClassifier, lr: float, weight_decay: float, warmup_ratio: float,
                 class_weights: torch.Tensor | None = None, grad_clip: float = 0.0) -> None:
        super().__init__()
        from torchmetrics.classification import MulticlassF1Score

        # from_pretrained returns the backbone in eval mode and Lightning keeps each module's mode:
        # without this, dropout would silently stay off during fine-tuning.
        self.model = model.train()
        self.lr = lr
        self.weight_decay = weight_decay
        self.warmup_ratio = warmup_ratio
        self.grad_clip = grad_clip
        self.register_buffer("class_weights", class_weights, persistent=False)
        self.val_macro_f1 = MulticlassF1Score(num_classes=model.head.num_labels, average="macro")

    @property
    def head(self):
        return self.model.head

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids, attention_mask)

    def _loss(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(batch["input_ids"], batch["attention_mask"])
        return self.head.loss(logits, batch["labels"], self.class_weights), logits

    def training_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, _ = self._loss(batch)
        self.log("train/loss", loss.detach(), on_step=True, on_epoch=False, prog_bar=True,
                 batch_size=batch["labels"].shape[0])
        return loss

    def validation_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> None:
        loss, logits = self._loss(batch)
        predictions = self.head.predict(self.head.probabilities(logits))
        self.val_macro_f1.update(predictions, batch["labels"])
        size = batch["labels"].shape[0]
        self.log("val/loss", loss, on_step=False, on_epoch=True, sync_dist=True, batch_size=size)
        self.log("val/macro_f1", self.val_macro_f1, on_step=False, on_epoch=True, prog_bar=True,
                 batch_size=size)

    def on_before_optimizer_step(self, optimizer) -> None:
        # Clipping here rather than via Trainer(gradient_clip_val): Lightning refuses that with the fused
        # AdamW under mixed precision although bf16 needs no gradient unscaling. Gradients are already
        # all-reduced and accumulated at this point.
        if self.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.parameters(), self.grad_clip)

    def configure_optimizers(self):
        from transformers import get_linear_schedule_with_warmup

        optimizer = torch.optim.AdamW(optimizer_groups(self.model, self.weight_decay), lr=self.lr,
                                      **fused_if_supported())
        total_steps = max(1, int(self.trainer.estimated_stepping_batches))
        warmup_steps = int(round(self.warmup_ratio * total_steps))
        scheduler = get_linear_schedule_with_warmup(optimizer, warmup_steps, total_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def fused_if_supported() -> dict[str, bool]:
    """The fused AdamW kernel (one pass over all parameters) exists for CPU and CUDA in torch >= 2.4."""
    major, minor = (int(part) for part in torch.__version__.split(".")[:2])
    return {"fused": True} if (major, minor) >= (2, 4) else {}
