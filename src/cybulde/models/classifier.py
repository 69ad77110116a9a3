"""`TextClassifier`: backbone -> adapter -> linear output layer sized by the head."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from cybulde.config.schema import Adapter as AdapterKind
from cybulde.models.adapter import Adapter
from cybulde.models.backbone import TokenizerSpec, build_backbone, take_pooler
from cybulde.models.heads import Head, make_head

if TYPE_CHECKING:
    from cybulde.config.schema import ModelConfig, Pooling


class TextClassifier(nn.Module):
    """`forward(input_ids, attention_mask)` returns raw logits `[B, head.num_outputs]`.

    The head turns logits into a loss, probabilities and predictions; the model never applies a
    softmax or sigmoid itself.
    """

    def __init__(self, backbone: nn.Module, adapter: Adapter, head: Head, label_names: Sequence[str],
                 max_length: int | None = None, backbone_name: str = "") -> None:
        super().__init__()
        if len(label_names) != head.num_labels:
            raise ValueError(f"{len(label_names)} label names for a head with num_labels={head.num_labels}")
        self.backbone = backbone
        self.adapter = adapter
        self.output = nn.Linear(adapter.output_size, head.num_outputs)
        self.head = head
        self.label_names = list(label_names)
        self.max_length = max_length
        self.backbone_name = backbone_name

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden_states = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.output(self.adapter(hidden_states, attention_mask))


    def architecture(self) -> dict[str, Any]:
        """Everything needed to rebuild this model without params.yaml (see `export.load_model`)."""
        return {
            "backbone": self.backbone_name,
            "backbone_config": portable_config(self.backbone.config.to_dict()),
            "pooling": self.adapter.pooling,
            "adapter": self.adapter.kind,
            "adapter_hidden_size": self.adapter.output_size if self.adapter.kind == AdapterKind.mlp else None,
            "dropout": float(self.adapter.dropout.p),
            "head": self.head.kind,
            "num_labels": self.head.num_labels,
            "num_outputs": self.head.num_outputs,
            "label_names": list(self.label_names),
            "max_length": self.max_length,
        }


def portable_config(backbone_config: dict[str, Any]) -> dict[str, Any]:
    """The backbone's config less `_name_or_path`, the folder its pretrained weights were read from:
    a path inside this machine's environment, not architecture. With it the exported model would
    differ between two checkouts that trained the same weights."""
    return {key: value for key, value in backbone_config.items() if key != "_name_or_path"}


def backbone_hidden_size(backbone: nn.Module) -> int:
    return int(backbone.config.hidden_size)


def compose_classifier(backbone: nn.Module, head: Head, label_names: Sequence[str], pooling: str | Pooling,
                       adapter: str | AdapterKind, adapter_hidden_size: int, dropout: float,
                       max_length: int | None = None, backbone_name: str = "",
                       pretrained_pooler: nn.Module | None = None) -> TextClassifier:
    return TextClassifier(
        backbone,
        Adapter(backbone_hidden_size(backbone), pooling, adapter, adapter_hidden_size, dropout,
                pretrained_pooler=pretrained_pooler),
        head, label_names, max_length=max_length, backbone_name=backbone_name)


def build_classifier(model_cfg: ModelConfig, manifest: dict[str, Any], tokenizer_dir: Path) -> TextClassifier:
    """The classifier `model_cfg` describes, for the data whose `manifest.json` is given.

    Raises `TokenizerMismatchError` when the data's tokenizer does not fit the backbone.
    """
    tokenizer = TokenizerSpec.from_manifest(manifest)
    backbone = build_backbone(model_cfg.backbone, model_cfg.scratch, tokenizer, tokenizer_dir)
    pretrained_pooler = take_pooler(backbone)  # never left in the backbone: unused, it would stall DDP
    label_names = [str(name) for name in manifest["label_names"]]
    head = make_head(model_cfg.head, len(label_names))
    return compose_classifier(backbone, head, label_names, model_cfg.pooling, model_cfg.adapter,
                              model_cfg.adapter_hidden_size, model_cfg.dropout,
                              max_length=tokenizer.max_length, backbone_name=model_cfg.backbone,
                              pretrained_pooler=pretrained_pooler)
