"""Tiny fetched datasets and tiny exported models, for the evaluation, serving, tracking,
benchmark and integration tests.
"""

from __future__ import annotations

from pathlib import Path

from cybulde.files import sha256_file
from tests.helpers.tiny_data import make_data_dir as make_tiny_data_dir

LABEL_NAMES = {2: ["not_offensive", "offensive"], 3: ["neither", "offensive", "hate"]}
MAX_LENGTH = 24


def make_data_dir(data_dir: Path, num_labels: int = 2, rows: dict[str, int] | None = None) -> Path:
    """A fetched dataset version: {train,validation,test}.parquet, tokenizer/, manifest.json."""
    return make_tiny_data_dir(data_dir, rows=rows or {"train": 24, "validation": 20, "test": 18},
                              num_labels=num_labels, label_names=LABEL_NAMES[num_labels],
                              max_length=MAX_LENGTH)


def make_model_dir(model_dir: Path, data_dir: Path, head: str = "softmax", seed: int = 0) -> Path:
    """A randomly initialised tiny scratch-BERT classifier exported with `save_model`."""
    import json

    import torch

    from cybulde.config.schema import ModelConfig, ScratchBackboneConfig
    from cybulde.models.classifier import build_classifier
    from cybulde.models.export import save_model

    torch.manual_seed(seed)
    manifest = json.loads((data_dir / "manifest.json").read_text())
    model_cfg = ModelConfig(
        backbone="scratch", head=head, dropout=0.0,
        scratch=ScratchBackboneConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                      intermediate_size=32, max_position_embeddings=64))
    model = build_classifier(model_cfg, manifest, data_dir / "tokenizer")
    # Make the output layer react to the toxic words so that predictions are not all one class.
    with torch.no_grad():
        model.output.weight.mul_(20.0)
    metadata = {"dataset": manifest["dataset"], "version": manifest["version"],
                "manifest_sha256": sha256_file(data_dir / "manifest.json"),
                "tokenizer_sha256": manifest["tokenizer"]["sha256"],
                "cleaning": manifest["publish_params"]["cleaning"], "train_params": {}}
    return save_model(model, model_dir, metadata, data_dir / "tokenizer")
