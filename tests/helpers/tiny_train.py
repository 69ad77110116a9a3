"""Tiny training setups for tests; also a script torchrun starts in the multi-process tests:

    torchrun ... tests/helpers/tiny_train.py <project_dir> [key=value ...]
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Started as a script, the repository root is not on sys.path yet.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from cybulde.config.presets import TINY  # noqa: E402
from tests.helpers import tiny_data  # noqa: E402

# The project's one tiny config, run as one process: the in-process tests call train() directly.
TINY_OVERRIDES = {**TINY, "launch.nproc_per_node": 1, "train.global_batch_size": TINY["train.batch_size"]}
# Where `make_pretrained_backbone` saves a tiny "pretrained" encoder, relative to the project.
PRETRAINED_DIR = "pretrained"


def make_project(project: Path, overrides: dict | None = None, rows: dict | None = None,
                 num_labels: int = 2) -> Path:
    """A project folder with params.yaml and a fetched tiny dataset under data/fetched."""
    project.mkdir(parents=True, exist_ok=True)
    tiny_data.make_data_dir(project / "data" / "fetched", rows=rows, num_labels=num_labels)
    return write_params(project, overrides)


def make_multilabel_project(project: Path, overrides: dict | None = None, rows_per_source: dict | None = None) -> Path:
    """A project folder with params.yaml (the multilabel head) and a fetched tiny multi-label version."""
    project.mkdir(parents=True, exist_ok=True)
    tiny_data.make_multilabel_data_dir(project / "data" / "fetched", rows_per_source=rows_per_source)
    return write_params(project, {"model.head": "multilabel", **(overrides or {})})


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


def make_pretrained_backbone(project: Path) -> Path:
    """A BERT of TINY's shape saved like a pretrained model (config.json, weights and the tokenizer of
    the project's fetched data): with `model.backbone=pretrained` its embeddings may be frozen."""
    import shutil

    import torch
    from transformers import BertConfig, BertModel

    data_dir = project / "data" / "fetched"
    tokenizer = tiny_data.read_manifest(data_dir)["tokenizer"]
    scratch = {key.rsplit(".", 1)[1]: value for key, value in TINY.items() if key.startswith("model.scratch.")}
    torch.manual_seed(0)
    encoder = BertModel(BertConfig(vocab_size=tokenizer["vocab_size"], pad_token_id=tokenizer["pad_token_id"],
                                   **scratch), add_pooling_layer=False)
    out_dir = project / PRETRAINED_DIR
    encoder.save_pretrained(str(out_dir))
    shutil.copy(data_dir / "tokenizer" / "tokenizer.json", out_dir / "tokenizer.json")
    return out_dir


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


COUNT_VALIDATION_ENV = "TINY_TRAIN_COUNT_VALIDATION"


def count_validation_rows(train_module) -> None:
    """Print `validation rows on rank R: N` after each validation: the rows this rank scored itself."""
    import lightning.pytorch as pl

    class CountRows(pl.Callback):
        def on_validation_epoch_start(self, trainer, pl_module):
            self.rows = 0

        def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
            self.rows += int(batch["labels"].shape[0])

        def on_validation_epoch_end(self, trainer, pl_module):
            print(f"validation rows on rank {trainer.global_rank}: {self.rows}", flush=True)

    build = train_module.build_trainer

    def with_counter(*args, **kwargs):
        trainer, throughput, history = build(*args, **kwargs)
        trainer.callbacks.append(CountRows())
        return trainer, throughput, history

    train_module.build_trainer = with_counter


def main() -> int:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(name)s %(message)s")
    project = Path(sys.argv[1])
    os.chdir(project)
    from cybulde.training import train as train_module

    use_test_doubles(train_module)
    if os.environ.get(COUNT_VALIDATION_ENV):
        count_validation_rows(train_module)
    train_module.train(load(project, sys.argv[2:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
