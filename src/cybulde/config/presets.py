"""Named sets of param overrides for common setups, as `{"section.key": value}`.

A preset is applied on top of `params.yaml` like any override: `as_overrides(SCRATCH)` gives the
`key=value` strings that `load_config(..., overrides)`, `python stages/<stage>.py key=value ...` and
`dvc exp run -S key=value` all accept, so a preset never needs a second config mechanism.

`TINY` is the one tiny configuration of the project: the tests, the end-to-end runs and the
reproducibility check (`cybulde.reproducibility.check`) all start from it and add only where their data
lives and, where a test needs it, the shape of the run (epochs, ranks).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cybulde.config.schema import Backbone, Pooling

# What a randomly initialised backbone needs: its embeddings must be trained, so they are not frozen
# (`validate_config` refuses scratch + frozen embeddings).
SCRATCH: dict[str, Any] = {
    "model.backbone": Backbone.scratch.value,
    "train.freeze_embeddings": False,
}

# A from-scratch BERT that trains in seconds on two CPU cores, under torchrun with 2 DDP ranks of one
# thread each. 128 positions fit data published with the default max_length (cybulde publish).
TINY: dict[str, Any] = {
    **SCRATCH,
    "model.scratch.hidden_size": 32,
    "model.scratch.num_hidden_layers": 1,
    "model.scratch.num_attention_heads": 2,
    "model.scratch.intermediate_size": 64,
    "model.scratch.max_position_embeddings": 128,
    # The default `pooler` is a pretrained layer in real backbones; a random one learns too slowly for
    # the few dozen steps of a tiny run, while the mean over tokens learns at once.
    "model.pooling": Pooling.mean.value,
    "train.epochs": 2,
    "train.batch_size": 8,
    "train.global_batch_size": 16,  # 8 per rank * 2 ranks, no gradient accumulation
    "train.lr": 1.0e-3,
    "train.precision": "32-true",  # bit-identical reruns need no bf16 kernels, and it is fast here
    "train.log_every_n_steps": 2,
    "launch.nproc_per_node": "2",  # DDP on every tiny run, whatever `auto` resolves to
    "launch.threads_per_rank": 1,
    "evaluation.batch_size": 32,
}


def override_value(value: Any) -> str:
    """`value` as Hydra's override grammar and `dvc exp run -S` read it (YAML: `false`, `0.001`)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        text = repr(value)
        # YAML 1.1 (PyYAML, DVC) reads "1e-05" as a string; "1.0e-05" is a float everywhere.
        return text.replace("e", ".0e", 1) if "e" in text and "." not in text else text
    return str(getattr(value, "value", value))


def as_overrides(preset: Mapping[str, Any]) -> list[str]:
    """`["model.backbone=scratch", ...]`: the preset as `key=value` override strings."""
    return [f"{key}={override_value(value)}" for key, value in preset.items()]
