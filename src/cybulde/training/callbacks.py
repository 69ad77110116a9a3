"""Callbacks: training throughput and plain progress lines for non-interactive output (CI, log files)."""

from __future__ import annotations

import logging
import time
from typing import Any

import lightning.pytorch as pl
import torch

log = logging.getLogger("cybulde.training")


class Throughput(pl.Callback):
    """Training samples/s and tokens/s over all ranks, with validation time left out.

    Counts are per rank and summed over ranks once at the end of training (one collective).
    """

    def __init__(self) -> None:
        self.samples = 0
        self.tokens = 0
        self.train_seconds = 0.0
        self._mark: float | None = None
        self.global_samples_per_s: float | None = None
        self.global_tokens_per_s: float | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._mark is None:
            self._mark = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.perf_counter()
        self.train_seconds += now - (self._mark or now)
        self._mark = now
        self.samples += int(batch["labels"].shape[0])
        self.tokens += int(batch["attention_mask"].sum())

    def on_validation_start(self, trainer, pl_module) -> None:
        self._mark = None

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._mark = None

    def local_samples_per_s(self) -> float:
        return self.samples / self.train_seconds if self.train_seconds else 0.0

    def on_train_end(self, trainer, pl_module) -> None:
        counts = torch.tensor([float(self.samples), float(self.tokens)], dtype=torch.float64)
        totals = trainer.strategy.reduce(counts, reduce_op="sum")
        seconds = max(self.train_seconds, 1e-9)
        self.global_samples_per_s = float(totals[0]) / seconds
        self.global_tokens_per_s = float(totals[1]) / seconds


class PlainProgress(pl.Callback):
    """One log line every `every_n_steps` optimizer steps and one per validation, on rank 0 only."""

    def __init__(self, throughput: Throughput, every_n_steps: int, world_size: int) -> None:
        self.throughput = throughput
        self.every_n_steps = every_n_steps
        self.world_size = world_size
        self._last_step = -1

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if not trainer.is_global_zero or step == self._last_step or step % self.every_n_steps:
            return
        self._last_step = step
        loss = trainer.callback_metrics.get("train/loss")
        lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else float("nan")
        total = trainer.estimated_stepping_batches
        log.info("epoch %d/%d step %d/%s loss %s lr %.3g ~%.1f samples/s", trainer.current_epoch + 1,
                 trainer.max_epochs, step, int(total) if total != float("inf") else "?",
                 _number(loss), lr, self.throughput.local_samples_per_s() * self.world_size)

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero and not trainer.sanity_checking:
            metrics = trainer.callback_metrics
            log.info("epoch %d validation: val/loss %s val/macro_f1 %s", trainer.current_epoch + 1,
                     _number(metrics.get("val/loss")), _number(metrics.get("val/macro_f1")))


class ValidationHistory(pl.Callback):
    """val/macro_f1 and val/loss after each validation epoch, to report the best epoch."""

    def __init__(self) -> None:
        self.epochs: list[dict[str, Any]] = []

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        metrics = trainer.callback_metrics
        self.epochs.append({"epoch": trainer.current_epoch, "global_step": trainer.global_step,
                            "val_macro_f1": float(metrics["val/macro_f1"]),
                            "val_loss": float(metrics["val/loss"])})

    def state_dict(self) -> dict[str, Any]:
        return {"epochs": [dict(record) for record in self.epochs]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.epochs = [dict(record) for record in state_dict["epochs"]]

    def best(self) -> dict[str, Any] | None:
        best = None
        for record in self.epochs:  # the first maximum, as ModelCheckpoint keeps only strict improvements
            if best is None or record["val_macro_f1"] > best["val_macro_f1"]:
                best = record
        return best


def _number(value: Any) -> str:
    return "n/a" if value is None else f"{float(value):.4f}"
