"""The LightningModule: loss from the model's head, AdamW with warmup + linear or cosine decay, macro-F1.

Validation may be sharded across DDP ranks (each rank scores its own rows, see
`TextDataModule.val_dataloader`): val/macro_f1 and val/loss are torchmetrics states (confusion
counts; a sum of example-weighted losses and of examples) that are summed over the ranks when the
epoch's value is computed, so the result is that of one process scoring the whole split.

A multi-label model (the multilabel head, built with its dataset's `source_names`) is validated per source: val/macro_f1
is `cybulde.training.metrics.SourceMacroF1` over the batches' `source` indices, and val/loss the
masked binary cross-entropy averaged over the present label cells (a batch weighs by its present
cells, not its rows).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import lightning.pytorch as pl
import torch
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassF1Score

from cybulde.models.classifier import MULTILABEL, TextClassifier
from cybulde.models.heads import MISSING
from cybulde.training.dropout import DROPOUT_MASKS, PACKED, TORCH, use_packed_dropout
from cybulde.training.metrics import SourceMacroF1
from cybulde.training.optim import (
    DENSE,
    EMBEDDING_UPDATES,
    LAZY,
    LazyEmbeddingAdamW,
    clip_grad_norm,
    use_sparse_embedding_gradients,
)


def inverse_frequency_weights(label_counts: Sequence[int]) -> torch.Tensor:
    """w_c = N / (K * n_c): every class contributes equally to the loss (empty classes count as 1)."""
    counts = torch.tensor([max(int(count), 1) for count in label_counts], dtype=torch.float64)
    return (counts.sum() / (len(counts) * counts)).to(torch.float32)


def positive_weights(answers: Mapping[str, Mapping[str, Mapping[str, int]]],
                     questions: Sequence[str]) -> torch.Tensor:
    """Per question, `pos_weight = no / yes` over the present cells of all sources (`answers`:
    source -> question -> {"yes", "no", "missing"} counts, a split summary's); a zero count counts as 1."""
    weights = []
    for question in questions:
        yes = sum(int(by_question.get(question, {}).get("yes", 0)) for by_question in answers.values())
        no = sum(int(by_question.get(question, {}).get("no", 0)) for by_question in answers.values())
        weights.append(max(no, 1) / max(yes, 1))
    return torch.tensor(weights, dtype=torch.float32)


def optimizer_groups(model: nn.Module, weight_decay: float, lr: float,
                     layer_lr_decay: float = 1.0) -> list[dict]:
    """AdamW parameter groups: weight decay on weight matrices only (not biases or norms), and
    layer-wise learning-rate decay: a parameter `k` layers below the top gets `lr * layer_lr_decay**k`.

    Depths: the backbone's embeddings are 0, its transformer layer `i` is `i + 1`, everything above
    (pooler, adapter, output layer) is the top. Groups are ordered top first, so group 0 carries `lr`.
    Frozen parameters (requires_grad False) are left out.
    """
    no_decay: set[int] = set()
    for module in model.modules():
        if isinstance(module, (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d)):
            no_decay.update(id(parameter) for parameter in module.parameters(recurse=False))
    top = _num_layers(model) + 1
    groups: dict[tuple[int, bool], list[nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        decays = not (name.endswith("bias") or id(parameter) in no_decay)
        depth = parameter_depth(name, top) if layer_lr_decay != 1.0 else top
        groups.setdefault((depth, decays), []).append(parameter)
    return [{"params": params, "weight_decay": weight_decay if decays else 0.0,
             "lr": lr * layer_lr_decay ** (top - depth)}
            for (depth, decays), params in sorted(groups.items(), key=_top_first)]


def _top_first(item: tuple[tuple[int, bool], list]) -> tuple[int, bool]:
    (depth, decays), _ = item
    return -depth, not decays


_LAYER_INDEX = re.compile(r"\.layers?\.(\d+)\.")


def parameter_depth(name: str, top: int) -> int:
    """0 for backbone embeddings, `i + 1` for transformer layer `i`, `top` for everything else."""
    if not name.startswith("backbone."):
        return top
    if ".embeddings." in name:
        return 0
    match = _LAYER_INDEX.search(name)
    return min(int(match.group(1)) + 1, top) if match else top


def _num_layers(model: nn.Module) -> int:
    backbone = getattr(model, "backbone", None)
    return int(getattr(getattr(backbone, "config", None), "num_hidden_layers", 0) or 0)


def freeze_input_embeddings(model: nn.Module) -> None:
    """Stop training the backbone's token-embedding table (vocabulary x hidden, the largest tensor)."""
    model.backbone.get_input_embeddings().weight.requires_grad_(False)


LR_SCHEDULES = ("linear", "cosine")


class ClassifierModule(pl.LightningModule):
    def __init__(self, model: TextClassifier, lr: float, weight_decay: float, warmup_ratio: float,
                 class_weights: torch.Tensor | None = None, grad_clip: float = 0.0,
                 layer_lr_decay: float = 1.0, focal_gamma: float = 0.0, lr_schedule: str = "linear",
                 embedding_updates: str = DENSE, dropout_masks: str = TORCH) -> None:
        super().__init__()
        if lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"unknown lr_schedule {lr_schedule!r}: expected one of {list(LR_SCHEDULES)}")
        if embedding_updates not in EMBEDDING_UPDATES:
            raise ValueError(f"unknown embedding_updates {embedding_updates!r}: expected one of "
                             f"{list(EMBEDDING_UPDATES)}")
        if dropout_masks not in DROPOUT_MASKS:
            raise ValueError(f"unknown dropout_masks {dropout_masks!r}: expected one of {list(DROPOUT_MASKS)}")

        # from_pretrained returns the backbone in eval mode and Lightning keeps each module's mode:
        # without this, dropout would silently stay off during fine-tuning.
        self.model = model.train()
        self.lr = lr
        self.weight_decay = weight_decay
        self.warmup_ratio = warmup_ratio
        self.grad_clip = grad_clip
        self.layer_lr_decay = layer_lr_decay
        self.focal_gamma = focal_gamma
        self.lr_schedule = lr_schedule
        self.embedding_updates = embedding_updates
        if embedding_updates == LAZY:
            use_sparse_embedding_gradients(self.model)
        if dropout_masks == PACKED:
            use_packed_dropout(self.model)
        self.register_buffer("class_weights", class_weights, persistent=False)
        self.is_multilabel = model.task == MULTILABEL
        if self.is_multilabel:
            if not model.source_names:
                raise ValueError("a multi-label classifier needs its dataset's source_names to be validated per source")
            self.val_macro_f1 = SourceMacroF1(len(model.source_names), model.head.num_labels)
        else:
            self.val_macro_f1 = MulticlassF1Score(num_classes=model.head.num_labels, average="macro")
        # weighted by batch size (multi-label: present cells): the mean over examples, across ranks too
        self.val_loss = MeanMetric()

    @property
    def head(self):
        return self.model.head

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids, attention_mask)

    def loss_and_logits(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The head's loss on a batch (with the class weights and focal gamma) and the logits."""
        logits = self.model(batch["input_ids"], batch["attention_mask"])
        return self.head.loss(logits, batch["labels"], self.class_weights, self.focal_gamma), logits

    def training_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, _ = self.loss_and_logits(batch)
        self.log("train/loss", loss.detach(), on_step=True, on_epoch=False, prog_bar=True,
                 batch_size=batch["labels"].shape[0])
        return loss

    def validation_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> None:
        loss, logits = self.loss_and_logits(batch)
        predictions = self.head.predict(self.head.probabilities(logits))
        size = batch["labels"].shape[0]
        if self.is_multilabel:
            self.val_macro_f1.update(predictions, batch["labels"], batch["source"])
            self.val_loss.update(loss.detach(), weight=(batch["labels"] != MISSING).sum().to(loss.dtype))
        else:
            self.val_macro_f1.update(predictions, batch["labels"])
            self.val_loss.update(loss.detach(), weight=size)
        self.log("val/loss", self.val_loss, on_step=False, on_epoch=True, batch_size=size)
        self.log("val/macro_f1", self.val_macro_f1, on_step=False, on_epoch=True, prog_bar=True,
                 batch_size=size)

    def on_before_optimizer_step(self, optimizer) -> None:
        # Clipping here rather than via Trainer(gradient_clip_val): Lightning refuses that with the fused
        # AdamW under mixed precision although bf16 needs no gradient unscaling. Gradients are already
        # all-reduced and accumulated at this point.
        if self.grad_clip > 0:
            clip_grad_norm(self.parameters(), self.grad_clip)

    def build_optimizer(self) -> torch.optim.Optimizer:
        """AdamW over `optimizer_groups` (fused where available); lazy for the embedding table if asked."""
        groups = optimizer_groups(self.model, self.weight_decay, self.lr, self.layer_lr_decay)
        adamw = LazyEmbeddingAdamW if self.embedding_updates == LAZY else torch.optim.AdamW
        return adamw(groups, lr=self.lr, **fused_if_supported())

    def configure_optimizers(self):
        optimizer = self.build_optimizer()
        total_steps = max(1, int(self.trainer.estimated_stepping_batches))
        scheduler = warmup_then_decay(optimizer, self.lr_schedule, int(round(self.warmup_ratio * total_steps)),
                                      total_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def warmup_then_decay(optimizer: torch.optim.Optimizer, schedule: str, warmup_steps: int,
                      total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup from 0, then linear or half-cosine decay to 0 at `total_steps`."""
    # transformers reads HF_HUB_OFFLINE when imported: only after `set_offline()` (cybulde.models.backbone)
    from transformers import get_cosine_schedule_with_warmup, get_linear_schedule_with_warmup

    make = get_cosine_schedule_with_warmup if schedule == "cosine" else get_linear_schedule_with_warmup
    return make(optimizer, warmup_steps, total_steps)


def fused_if_supported() -> dict[str, bool]:
    """The fused AdamW kernel (one pass over all parameters) exists for CPU and CUDA in torch >= 2.4."""
    major, minor = (int(part) for part in torch.__version__.split(".")[:2])
    return {"fused": True} if (major, minor) >= (2, 4) else {}
