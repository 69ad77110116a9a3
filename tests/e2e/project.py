"""Build a tiny, self-contained copy of the project for end-to-end runs of the real pipeline.

The copy holds the repo's tracked files (so dvc.yaml, params.yaml and stages/ are the real ones),
a registry with a small generated dataset published by the real `publish`, and params shrunk to a
tiny from-scratch BERT, so `dvc repro` runs every stage for real in about a minute.
"""

from __future__ import annotations

import csv
import random
import socket
import subprocess
from collections.abc import Sequence
from pathlib import Path

from cybulde.data.publish import publish
from cybulde.repro_check import copy_project, set_params, tool_env

REPO_ROOT = Path(__file__).resolve().parents[2]

OFFENSIVE = ["idiot", "loser", "stupid", "trash", "moron", "pathetic", "clown", "disgusting"]
FRIENDLY = ["thanks", "lovely", "friend", "great", "sunny", "welcome", "happy", "kind"]
FILLER = ["you", "are", "the", "a", "today", "really", "so", "this", "is", "what", "game", "show"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def write_raw_csv(path: Path, rows: int = 240, seed: int = 7) -> Path:
    """Two classes that a tiny model can separate: offensive words versus friendly ones."""
    rng = random.Random(seed)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["tweet", "class"])
        for index in range(rows):
            offensive = index % 3 == 0
            words = rng.sample(FILLER, 4) + rng.sample(OFFENSIVE if offensive else FRIENDLY, 2)
            rng.shuffle(words)
            writer.writerow([" ".join(words), "offensive" if offensive else "not_offensive"])
    return path


def tiny_overrides(registry: Path, tracking_uri: str | None) -> list[str]:
    overrides = [
        f"data.registry={registry}",
        "data.dataset=tiny",
        "data.version=v1",
        "model.backbone=scratch",
        "model.scratch.hidden_size=32",
        "model.scratch.num_hidden_layers=1",
        "model.scratch.num_attention_heads=2",
        "model.scratch.intermediate_size=64",
        "model.scratch.max_position_embeddings=64",
        "train.epochs=6",
        "train.batch_size=8",
        "train.global_batch_size=16",
        "train.lr=0.001",
        "train.freeze_embeddings=false",  # a model trained from scratch must learn its embeddings
        "train.log_every_n_steps=2",
        "launch.nproc_per_node=2",
        f"launch.rdzv_endpoint=127.0.0.1:{free_port()}",
        "evaluation.batch_size=32",
    ]
    if tracking_uri is not None:
        overrides.append(f"mlflow.tracking_uri={tracking_uri}")
    return overrides


def make_tiny_project(base: Path, tracking_uri: str | None = None,
                      extra_overrides: Sequence[str] = ()) -> Path:
    """A committed project copy under `base/project` whose pipeline trains a tiny model."""
    project = copy_project(REPO_ROOT, base / "project")
    registry = base / "registry"
    raw = write_raw_csv(base / "raw.csv")
    publish("csv", raw, str(registry), "v1", dataset="tiny", tokenizer="wordpiece", vocab_size=200,
            max_length=32, text_column="tweet", label_column="class", echo=None)
    set_params(project / "params.yaml", [*tiny_overrides(registry, tracking_uri), *extra_overrides])
    git(project, "commit", "-qam", "tiny params")
    return project


def git(project: Path, *args: str) -> str:
    return run(project, "git", *args)


def run(project: Path, *command: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(command, cwd=project, env=env or tool_env(), capture_output=True,
                            text=True)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed:\n{result.stdout[-4000:]}\n"
                             f"{result.stderr[-4000:]}")
    return result.stdout + result.stderr
