"""Tiny training setups for tests; also a script torchrun starts in the multi-process tests:

    torchrun ... tests/training/tiny_train.py <project_dir> [key=value ...]
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "models"))

import tiny_data  # noqa: E402

TINY_OVERRIDES = {
    "model.backbone": "scratch",
    "model.scratch.hidden_size": 32,
    "model.scratch.num_hidden_layers": 2,
    "model.scratch.num_attention_heads": 2,
    "model.scratch.intermediate_size": 64,
    "model.scratch.max_position_embeddings": 64,
    "train.epochs": 2,
    "train.batch_size": 8,
    "train.global_batch_size": 8,
    "train.lr": 1.0e-3,
    "train.warmup_ratio": 0.1,
    "train.precision": "32-true",
    "train.log_every_n_steps": 1,
    "launch.nnodes": 1,
    "launch.nproc_per_node": 1,
    "launch.threads_per_rank": 1,
}


def make_project(project: Path, overrides: dict | None = None, rows: dict | None = None,
                 num_labels: int = 2) -> Path:
    """A project folder with params.yaml and a fetched tiny dataset under data/fetched."""
    project.mkdir(parents=True, exist_ok=True)
    tiny_data.make_data_dir(project / "data" / "fetched", rows=rows, num_labels=num_labels)
    return write_params(project, overrides)


def write_params(project: Path, overrides: dict | None = None) -> Path:
    """params.yaml: the schema's defaults, the tiny setup, then `overrides`."""
    from omegaconf import OmegaConf

    from cybulde.config.loader import to_dict
    from cybulde.config.schema import Config

    params = OmegaConf.create(to_dict(Config()))
    for key, value in {**TINY_OVERRIDES, **(overrides or {})}.items():
        OmegaConf.update(params, key, value)
    OmegaConf.save(params, project / "params.yaml")
    return project


def load(project: Path, overrides: list[str] = ()):
    from cybulde.config.loader import load_config

    return load_config(project / "params.yaml", list(overrides))


def use_test_doubles(train_module, monkeypatch=None) -> None:
    """No MLflow in these tests (the ones that want it call `start_tracking.__wrapped__`)."""
    def setattr_(name, value):
        if monkeypatch is not None:
            monkeypatch.setattr(train_module, name, value)
        else:
            setattr(train_module, name, value)

    def no_tracking(cfg, state):
        return None

    no_tracking.__wrapped__ = train_module.start_tracking  # the real one, for tests that want MLflow
    setattr_("start_tracking", no_tracking)


def main() -> int:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(name)s %(message)s")
    project = Path(sys.argv[1])
    os.chdir(project)
    from cybulde.training import train as train_module

    use_test_doubles(train_module)
    train_module.train(load(project, sys.argv[2:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
