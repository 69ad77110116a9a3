"""Where a training's resume state lives, and when it may be reused.

`.cybulde/resume/train/<key>/` (outside DVC's `model/` out, ignored by git and DVC) holds:

    last.ckpt   the full state of the latest checkpoint (`cybulde.training.checkpoints.ResumeCheckpoint`)
    best.ckpt   the weights of the best validation epoch so far, from which `model/` is exported
    run.json    the MLflow run this training logs into, so a resumed training continues that run

`<key>` digests everything that decides the trained weights: the `model`, `train` and `launch`
params except those that do not change them (`NOT_IN_KEY`), the training code (the source of the
packages the `train` stage depends on) and the data (the manifest's sha256, which covers every
file). Only a folder with exactly this key is reused; the first rank of each node removes the
others when training starts, and rank 0 removes this one after `model/` has been exported.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from cybulde.config.loader import to_flat_dict
from cybulde.files import files_sha256, remove_temporary_files, write_json

if TYPE_CHECKING:
    from cybulde.config.schema import Config

RESUME_DIR = ".cybulde/resume/train"
LAST_CHECKPOINT = "last.ckpt"
BEST_CHECKPOINT = "best"  # ModelCheckpoint's filename, without its .ckpt suffix
RUN_FILE = "run.json"
KEY_SECTIONS = ("model", "train", "launch")
# Params that change how training is run or reported, never the weights it produces.
NOT_IN_KEY = frozenset({"train.checkpoint_every_n_steps", "train.log_every_n_steps", "launch.max_restarts",
                        "launch.rdzv_endpoint"})
# The code the `train` stage depends on (dvc.yaml), relative to the cybulde package.
TRAINING_CODE = ("training", "models", "loading")


def code_digest(package_root: Path | None = None) -> str:
    """sha256 over the names and contents of the training code's Python files."""
    root = package_root or Path(__file__).resolve().parents[1]
    files: list[Path] = []
    for entry in TRAINING_CODE:
        path = root / entry
        files.extend(sorted(path.rglob("*.py")) if path.is_dir() else [path])
    return files_sha256(files, root)


def result_params(cfg: Config) -> dict[str, Any]:
    """The params that decide the trained weights: `model.*`, `train.*`, `launch.*` less `NOT_IN_KEY`
    (only those sections are read: they are the `train` stage's declared params)."""
    params = {f"{section}.{key}": value for section in KEY_SECTIONS
              for key, value in to_flat_dict(getattr(cfg, section)).items()}
    return {key: value for key, value in sorted(params.items()) if key not in NOT_IN_KEY}


def resume_key(cfg: Config, data_sha256: str, code_sha256: str | None = None) -> str:
    payload = {"params": result_params(cfg), "code": code_sha256 or code_digest(), "data": data_sha256}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:20]


@dataclass(frozen=True)
class ResumeState:
    folder: Path

    @property
    def last_checkpoint(self) -> Path:
        return self.folder / LAST_CHECKPOINT

    def saved_step(self) -> int | None:
        """The global step of `last.ckpt`, or None if there is none (or it cannot be read)."""
        checkpoint = self.load_summary()
        return None if checkpoint is None else int(checkpoint["global_step"])

    def load_summary(self) -> dict[str, Any] | None:
        """`last.ckpt` memory-mapped (tensors are read only when touched), or None."""
        if not self.last_checkpoint.is_file():
            return None
        try:
            return torch.load(self.last_checkpoint, map_location="cpu", weights_only=True, mmap=True)
        except Exception:  # an unreadable checkpoint is no checkpoint: training starts over
            return None

    def run_id(self) -> str:
        """The MLflow run recorded for this training, or ''."""
        try:
            return str(json.loads((self.folder / RUN_FILE).read_text(encoding="utf-8")).get("run_id", ""))
        except (OSError, ValueError):
            return ""

    def record_run(self, run_id: str) -> None:
        write_json({"run_id": run_id}, self.folder / RUN_FILE)

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def open_resume_state(root: Path, key: str, node_leader: bool) -> ResumeState:
    """The state folder for `key`; on a node's first rank, other keys' folders and stray temp files go."""
    base = root / RESUME_DIR
    state = ResumeState(base / key)
    if node_leader and base.is_dir():
        for entry in base.iterdir():
            if entry.name == key:
                continue
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
        remove_temporary_files(state.folder)
    return state


def agreed_step(local_step: int | None, world_size: int) -> int | None:
    """The checkpoint step every rank found, or None when any rank lacks it or ranks disagree (a collective).

    Ranks on one node read the same file; on several nodes each reads its own copy, and a node killed
    while writing may hold an older one: then nobody resumes rather than ranks resuming apart.
    """
    if world_size == 1:
        return local_step
    mine = torch.tensor([-1 if local_step is None else local_step], dtype=torch.int64)
    everyone = [torch.zeros_like(mine) for _ in range(world_size)]
    dist.all_gather(everyone, mine)
    steps = {int(step) for step in everyone}
    return local_step if len(steps) == 1 and local_step is not None else None
