"""`TextClassifier`: backbone -> adapter -> linear output layer sized by the head.

A classifier of a multi-label (multi-source) dataset has the `multilabel` head, the questions as its
label names and the dataset's `source_names`; its `architecture()` (the exported config.json) records
`task: multilabel` and those names. A single-label classifier's architecture has neither key.

Under bf16 autocast on a CPU, the encoder's hidden states stay float32 from layer to layer: the
embeddings' sum is float32, and each residual sum of a bf16 matmul output and a float32 hidden state
is float32 again, so every linear layer casts its input to bf16 first (autocast keeps no cast
activations) and every elementwise op reads and writes float32. `hidden_states="bf16"` casts the
embeddings' output to autocast's dtype instead, and every layer after it then runs in bf16 with
nothing to cast but the weights. The pooling and output layer still get float32 hidden states.
Without autocast (32-true) the option changes nothing. The architecture records it, so an exported
model is scored with the numerics it was validated with.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from cybulde.config.schema import Adapter as AdapterKind
from cybulde.config.schema import Head as HeadKind
from cybulde.errors import CybuldeError
from cybulde.models.adapter import Adapter
from cybulde.models.backbone import TokenizerSpec, build_backbone, take_pooler
from cybulde.models.heads import HEADS, Head, MultiLabelHead, make_head

if TYPE_CHECKING:
    from cybulde.config.schema import ModelConfig, Pooling

# A dataset's `task` (its manifest's; the same names as `cybulde.registry.manifest`, which this
# package does not import).
MULTICLASS, MULTILABEL = "multiclass", "multilabel"

# `train.hidden_states`: the dtype of the encoder's hidden states under bf16 autocast.
FLOAT32_HIDDEN_STATES, BF16_HIDDEN_STATES = "float32", "bf16"
HIDDEN_STATES = (FLOAT32_HIDDEN_STATES, BF16_HIDDEN_STATES)


class HeadTaskMismatchError(CybuldeError, ValueError):
    """`model.head` cannot learn the dataset's task (multilabel head vs. one label per row, or back)."""


def learns_multilabel(head: str | HeadKind) -> bool:
    """Whether the head of this kind answers one question per logit (a `MultiLabelHead`, or a subclass)."""
    head_class = HEADS.get(str(getattr(head, "value", head)))
    return head_class is not None and issubclass(head_class, MultiLabelHead)


def check_head_fits_task(head: str | HeadKind, task: str, dataset: str = "the dataset") -> None:
    """Refuse the multilabel head on a single-label dataset and any other head on a multi-label one."""
    kind = str(getattr(head, "value", head))
    multilabel_head = learns_multilabel(kind)
    if multilabel_head and task != MULTILABEL:
        raise HeadTaskMismatchError(
            f"model.head=multilabel needs a multi-label dataset version, but {dataset} has task {task!r} "
            f"(one label per row); set model.head=softmax or sigmoid, or train on a version published "
            f"with --questions")
    if not multilabel_head and task == MULTILABEL:
        raise HeadTaskMismatchError(
            f"model.head={kind} cannot learn {dataset}: its task is 'multilabel' (one answer per "
            f"question, some missing); set model.head=multilabel")


class TextClassifier(nn.Module):
    """`forward(input_ids, attention_mask)` returns raw logits `[B, head.num_outputs]`.

    The head turns logits into a loss, probabilities and predictions; the model never applies a
    softmax or sigmoid itself.
    """

    def __init__(self, backbone: nn.Module, adapter: Adapter, head: Head, label_names: Sequence[str],
                 max_length: int | None = None, backbone_name: str = "",
                 source_names: Sequence[str] | None = None, hidden_states: str = FLOAT32_HIDDEN_STATES) -> None:
        super().__init__()
        if len(label_names) != head.num_labels:
            raise ValueError(f"{len(label_names)} label names for a head with num_labels={head.num_labels}")
        if hidden_states not in HIDDEN_STATES:
            raise ValueError(f"unknown hidden_states {hidden_states!r}: expected one of {list(HIDDEN_STATES)}")
        self.backbone = backbone
        self.adapter = adapter
        self.output = nn.Linear(adapter.output_size, head.num_outputs)
        self.head = head
        self.label_names = list(label_names)
        self.max_length = max_length
        self.backbone_name = backbone_name
        # A multi-label classifier's sources (its rows' `source` index into them); None otherwise.
        self.source_names = None if source_names is None else [str(name) for name in source_names]
        self.hidden_states = hidden_states
        if hidden_states == BF16_HIDDEN_STATES:
            encoder_embeddings(backbone).register_forward_hook(_to_autocast_dtype)

    @property
    def task(self) -> str:
        """The dataset task this classifier answers: its head's."""
        return MULTILABEL if isinstance(self.head, MultiLabelHead) else MULTICLASS

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden_states = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.output(self.adapter(hidden_states.float(), attention_mask))

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
            # only for a multi-label model: a single-label model's config.json keeps its keys
            **({"task": self.task, "source_names": list(self.source_names or [])} if self.task == MULTILABEL else {}),
            # only where bf16: the config.json of a float32 model keeps the keys it always had
            **({"hidden_states": self.hidden_states} if self.hidden_states != FLOAT32_HIDDEN_STATES else {}),
        }


def encoder_embeddings(backbone: nn.Module) -> nn.Module:
    """The backbone's embeddings module (token + position embeddings, layer norm, dropout)."""
    embeddings = getattr(backbone, "embeddings", None)
    if not isinstance(embeddings, nn.Module):
        raise ValueError(f"hidden_states={BF16_HIDDEN_STATES!r} needs a backbone with an `embeddings` module; "
                         f"{type(backbone).__name__} has none")
    return embeddings


def _to_autocast_dtype(module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
    device = output.device.type
    if torch.is_autocast_enabled(device):
        return output.to(torch.get_autocast_dtype(device))
    return output


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
                       pretrained_pooler: nn.Module | None = None,
                       source_names: Sequence[str] | None = None,
                       hidden_states: str = FLOAT32_HIDDEN_STATES) -> TextClassifier:
    return TextClassifier(
        backbone,
        Adapter(backbone_hidden_size(backbone), pooling, adapter, adapter_hidden_size, dropout,
                pretrained_pooler=pretrained_pooler),
        head, label_names, max_length=max_length, backbone_name=backbone_name, source_names=source_names,
        hidden_states=hidden_states)


def build_classifier(model_cfg: ModelConfig, manifest: dict[str, Any], tokenizer_dir: Path,
                     hidden_states: str = FLOAT32_HIDDEN_STATES) -> TextClassifier:
    """The classifier `model_cfg` describes, for the data whose `manifest.json` is given, with its
    encoder's hidden states in `hidden_states` under bf16 autocast (`train.hidden_states`).

    Raises `HeadTaskMismatchError` when `model.head` cannot learn the data's task (before anything is
    built) and `TokenizerMismatchError` when the data's tokenizer does not fit the backbone. A
    multi-label manifest gives one output per question and the classifier its `source_names`.
    """
    task = str(manifest.get("task", MULTICLASS))
    check_head_fits_task(model_cfg.head, task, f"{manifest.get('dataset')}/{manifest.get('version')}")
    tokenizer = TokenizerSpec.from_manifest(manifest)
    backbone = build_backbone(model_cfg.backbone, model_cfg.scratch, tokenizer, tokenizer_dir)
    pretrained_pooler = take_pooler(backbone)  # never left in the backbone: unused, it would stall DDP
    label_names = [str(name) for name in manifest["label_names"]]
    head = make_head(model_cfg.head, len(label_names))
    return compose_classifier(backbone, head, label_names, model_cfg.pooling, model_cfg.adapter,
                              model_cfg.adapter_hidden_size, model_cfg.dropout,
                              max_length=tokenizer.max_length, backbone_name=model_cfg.backbone,
                              pretrained_pooler=pretrained_pooler,
                              source_names=manifest.get("source_names") if task == MULTILABEL else None,
                              hidden_states=hidden_states)
