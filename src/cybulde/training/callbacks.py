"""Callbacks: training throughput, plain progress lines for non-interactive output (CI, log files), the
validation history, the max_steps quick run and the exponential moving average of the weights."""

from __future__ import annotations

import logging
import time
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging

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


# train.select_on -> (the logged metric, "max" | "min", its key in a ValidationHistory record)
SELECTION = {"macro_f1": ("val/macro_f1", "max", "val_macro_f1"), "loss": ("val/loss", "min", "val_loss")}


def selection_monitor(select_on: str) -> dict[str, str]:
    """`monitor` and `mode` for ModelCheckpoint / EarlyStopping under `train.select_on`."""
    monitor, mode, _ = SELECTION[select_on]
    return {"monitor": monitor, "mode": mode}


class ValidationHistory(pl.Callback):
    """val/macro_f1 and val/loss after each validation, to report the best one (by `select_on`)."""

    def __init__(self, select_on: str = "macro_f1") -> None:
        self.epochs: list[dict[str, Any]] = []
        _, self.mode, self.key = SELECTION[select_on]

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
        sign = 1.0 if self.mode == "max" else -1.0
        for record in self.epochs:  # the first optimum, as ModelCheckpoint keeps only strict improvements
            if best is None or sign * record[self.key] > sign * best[self.key]:
                best = record
        return best


class StopAtMaxSteps(pl.Callback):
    """`train.max_steps` as a quick run: stop once it is reached, with a validation at that point.

    Lightning itself ends at max_steps without validating unless the step closes an epoch; asking the
    Trainer to stop makes its loop validate the current weights first (as it does for early stopping),
    so the best checkpoint is chosen from every epoch end before the stop and from the stop itself.
    """

    def __init__(self, max_steps: int) -> None:
        self.max_steps = max_steps

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.max_steps > 0 and trainer.global_step >= self.max_steps:
            trainer.should_stop = True


class AveragedWeights(EMAWeightAveraging):
    """An exponential moving average of the weights that validation, checkpoints and export all see.

    Lightning's EMAWeightAveraging swaps the averaged weights in for a validation epoch and back out
    at its end, before ModelCheckpoint saves (on_validation_end), and a weights-only checkpoint skips
    the callback's on_save_checkpoint: the saved "best" would hold the raw weights. Here the average
    stays in place until training resumes (the next batch, or the end of training), so the checkpoint
    written after a validation holds exactly the weights that were validated.
    """

    def __init__(self, decay: float) -> None:
        # Parameters only: the backbone's buffers are integer position ids, which an average would corrupt.
        super().__init__(decay=decay, use_buffers=False)
        self._swapped = False

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        if self._average_model is not None and not self._swapped:
            self._swap_models(pl_module)
            self._swapped = True

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        pass  # keep the average in place for ModelCheckpoint

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._restore_training_weights(pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        self._restore_training_weights(pl_module)
        super().on_train_end(trainer, pl_module)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        """A full checkpoint keeps Lightning's layout (average in `state_dict`, training weights in
        `current_model_state`), also when written while the average is swapped in."""
        if not self._swapped:
            super().on_save_checkpoint(trainer, pl_module, checkpoint)
            return
        # The module holds the average (already in checkpoint["state_dict"]); its copy holds the training weights.
        state = self._average_model.state_dict()
        checkpoint["current_model_state"] = {name[7:]: value for name, value in state.items()
                                             if name.startswith("module.")}
        checkpoint["averaging_state"] = {name: value for name, value in state.items()
                                         if not name.startswith("module.")}

    def _restore_training_weights(self, pl_module) -> None:
        if self._swapped:
            self._swap_models(pl_module)
            self._swapped = False


def _number(value: Any) -> str:
    return "n/a" if value is None else f"{float(value):.4f}"
