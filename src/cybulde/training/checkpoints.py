"""Full-state training checkpoints, written so that a killed run can resume bit for bit.

- `AtomicCheckpointIO`: every checkpoint Lightning writes goes to a temporary file beside its
  target, is fsync'ed and renamed over it: a reader finds the previous checkpoint or the new one,
  never a part of one (Lightning's own IO stages the file in the system temp folder and copies it).
- `NodeLocalDDPStrategy`: DDP that writes checkpoints on the first rank of *every* node, so each
  node of a multi-node job can resume from its own disk.
- `ResumeCheckpoint`: writes `last.ckpt` every n optimizer steps and at each epoch end (after
  validation, early stopping and the best checkpoint). Lightning's checkpoint holds the weights,
  optimizer, scheduler, loop position and callback states (early stopping, best score); this
  callback's own state adds what Lightning leaves out: every rank's RNG states (each rank draws its
  own dropout masks), how many batches of the epoch were done, and whether training was told to stop.

Everything in a checkpoint is a tensor or a plain value, so it loads with `weights_only=True`.
"""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
import torch.distributed as dist
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.strategies import DDPStrategy

from cybulde.files import write_file_atomically

log = logging.getLogger("cybulde.training")


class AtomicCheckpointIO(TorchCheckpointIO):
    """`torch.save` into a temporary file beside `path`, fsync, then rename over `path` (`cybulde.files`)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        write_file_atomically(target, lambda temporary: torch.save(checkpoint, temporary))


class NodeLocalDDPStrategy(DDPStrategy):
    """DDP whose checkpoints are written by local rank 0 of each node instead of global rank 0 only."""

    def save_checkpoint(self, checkpoint: dict[str, Any], filepath: Any, storage_options: Any | None = None) -> None:
        if self.local_rank == 0:
            self.checkpoint_io.save_checkpoint(checkpoint, filepath, storage_options=storage_options)

    def remove_checkpoint(self, filepath: Any) -> None:
        if self.local_rank == 0:
            self.checkpoint_io.remove_checkpoint(filepath)


# -- RNG state as tensors ------------------------------------------------------------------------
def capture_rng_state() -> dict[str, torch.Tensor]:
    """This process's torch, CUDA, numpy and python RNG states, each as a tensor (int64 / float64)."""
    _, python_state, python_gauss = random.getstate()
    _, numpy_keys, numpy_pos, numpy_has_gauss, numpy_gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state().to(torch.int64),
        "numpy_keys": torch.from_numpy(np.asarray(numpy_keys, dtype=np.int64)),
        "numpy_pos": torch.tensor([numpy_pos, numpy_has_gauss], dtype=torch.int64),
        "numpy_gauss": torch.tensor([numpy_gauss], dtype=torch.float64),
        "python_state": torch.tensor(python_state, dtype=torch.int64),
        "python_gauss": torch.tensor([python_gauss is not None, python_gauss or 0.0], dtype=torch.float64),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state().to(torch.int64)
    return state


def restore_rng_state(state: dict[str, torch.Tensor]) -> None:
    """Undo `capture_rng_state`: set this process's RNGs to the captured states."""
    torch.set_rng_state(state["torch"].to(torch.uint8))
    position, has_gauss = (int(value) for value in state["numpy_pos"].tolist())
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), position, has_gauss,
                         float(state["numpy_gauss"][0])))
    has_python_gauss, python_gauss = state["python_gauss"].tolist()
    random.setstate((3, tuple(int(value) for value in state["python_state"].tolist()),
                     python_gauss if has_python_gauss else None))
    if "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].to(torch.uint8))


def gather_rng_states(world_size: int) -> dict[str, torch.Tensor]:
    """Every rank's RNG states, stacked by global rank (a collective: call it on all ranks).

    CPU tensors: the process group of `cybulde.training.distributed.init_distributed` sends them through gloo.
    """
    local = capture_rng_state()
    if world_size == 1:
        return {name: tensor.unsqueeze(0) for name, tensor in local.items()}
    gathered = {}
    for name, tensor in local.items():
        parts = [torch.empty_like(tensor) for _ in range(world_size)]
        dist.all_gather(parts, tensor)
        gathered[name] = torch.stack(parts)
    return gathered


# -- the callback ---------------------------------------------------------------------------------
class ResumeCheckpoint(Checkpoint):
    """Saves the full training state to `path` every `every_n_steps` steps (0: never) and each epoch end."""

    def __init__(self, path: str | Path, every_n_steps: int) -> None:
        self.path = Path(path)
        self.every_n_steps = every_n_steps
        self.saves: list[tuple[str, float]] = []  # ("step" or "epoch", seconds) of each save, for the benchmark
        self._trainer: pl.Trainer | None = None
        self._last_saved_step = 0
        self._epoch_batches = 0
        self._restored: dict[str, Any] | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.every_n_steps <= 0 or step == self._last_saved_step or step % self.every_n_steps:
            return  # also skips the micro-batches after a step while gradients accumulate
        if batch_idx + 1 >= trainer.num_training_batches:
            return  # the epoch-end checkpoint follows validation; resuming here would skip validation
        self._save(trainer, "step", epoch_batches=batch_idx + 1)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._save(trainer, "epoch", epoch_batches=0)

    def _save(self, trainer: pl.Trainer, kind: str, epoch_batches: int) -> None:
        self._last_saved_step, self._epoch_batches = trainer.global_step, epoch_batches
        start = time.perf_counter()
        trainer.save_checkpoint(self.path, weights_only=False)  # on every rank: state_dict() gathers RNG
        self.saves.append((kind, time.perf_counter() - start))
        if trainer.is_global_zero:
            log.debug("checkpoint at step %d written in %.2f s", trainer.global_step, self.saves[-1][1])

    def state_dict(self) -> dict[str, Any]:
        trainer = self._trainer
        assert trainer is not None, "ResumeCheckpoint.state_dict() before setup()"
        return {"global_step": trainer.global_step, "epoch": trainer.current_epoch,
                "epoch_batches": self._epoch_batches, "should_stop": trainer.should_stop,
                "world_size": trainer.world_size, "rng": gather_rng_states(trainer.world_size)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored = state_dict
        self._last_saved_step = int(state_dict["global_step"])
        self._epoch_batches = int(state_dict["epoch_batches"])

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # The RNGs are set here, after Lightning has restored and set up everything and before the first
        # batch, the point that corresponds to the moment the state was saved.
        if self._restored is None:
            return
        state, self._restored = self._restored, None
        restore_rng_state({name: tensor[trainer.global_rank] for name, tensor in state["rng"].items()})
        trainer.should_stop = bool(state["should_stop"])
        if int(state["epoch_batches"]) == 0:
            replay_epoch_start(trainer)


def replay_epoch_start(trainer: pl.Trainer) -> None:
    """Do to the RNGs what the start of an epoch's data loader did after an epoch-end checkpoint.

    Creating a DataLoader iterator draws its workers' base seed from the global torch RNG. An
    uninterrupted training creates each epoch's iterator after the epoch-end checkpoint was saved, so
    the draw follows the saved RNG state; Lightning created the resumed training's iterator before the
    state was restored. One more iterator, created now, replays the draw; the loop keeps Lightning's
    (without workers the seed is unused; with persistent workers this rewinds that same iterator and
    draws nothing, as the uninterrupted training's later epochs do). Mid-epoch checkpoints need none of
    this: no iterator is created between their save and the next batch.
    """
    iter(trainer.train_dataloader)


def epoch_batches_done(checkpoint: dict[str, Any]) -> int:
    """Batches of the current epoch that the run saved in `checkpoint` had trained on."""
    for key, state in checkpoint.get("callbacks", {}).items():
        if key == ResumeCheckpoint.__qualname__:
            return int(state["epoch_batches"])
    return 0
