"""Pooling of the encoder's token states plus an optional MLP between backbone and head.

Poolings: `mean` over the non-padding tokens, `cls` the first token's state, `pooler` the first
token's state through BERT's pooler (dense + tanh, as in `BertForSequenceClassification`), its
dense layer initialised from the pretrained backbone's pooler weights where the checkpoint has them.
"""

from __future__ import annotations

import torch
from torch import nn

from cybulde.config.schema import Adapter as AdapterKind
from cybulde.config.schema import Pooling
from cybulde.errors import CybuldeError

# The allowed values, as the schema's enums list them (names kept for existing importers).
POOLINGS = tuple(member.value for member in Pooling)
ADAPTERS = tuple(member.value for member in AdapterKind)
FIRST_TOKEN_POOLINGS = (Pooling.cls, Pooling.pooler)


class AdapterError(CybuldeError, ValueError):
    """An unknown pooling or adapter kind."""


def parse_pooling(pooling: str | Pooling) -> Pooling:
    try:
        return Pooling(pooling)
    except ValueError:
        raise AdapterError(f"unknown pooling {pooling!r}: expected one of {list(POOLINGS)}") from None


def parse_adapter(kind: str | AdapterKind) -> AdapterKind:
    try:
        return AdapterKind(kind)
    except ValueError:
        raise AdapterError(f"unknown adapter {kind!r}: expected one of {list(ADAPTERS)}") from None


def pool(hidden_states: torch.Tensor, attention_mask: torch.Tensor, pooling: str | Pooling) -> torch.Tensor:
    if parse_pooling(pooling) in FIRST_TOKEN_POOLINGS:
        return hidden_states[:, 0]
    mask = attention_mask.unsqueeze(-1).to(hidden_states.dtype)
    return (hidden_states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


class Adapter(nn.Module):
    """Pool, then (adapter 'mlp') Linear -> GELU -> Dropout; `output_size` feeds the head's Linear.

    `pretrained_pooler`: the backbone's own pooler (a module with a `dense` Linear), whose weights
    initialise the dense layer of `pooling="pooler"`; without it that layer starts random.
    """

    def __init__(self, hidden_size: int, pooling: str | Pooling = Pooling.mean,
                 kind: str | AdapterKind = AdapterKind.none, adapter_hidden_size: int = 256,
                 dropout: float = 0.1, pretrained_pooler: nn.Module | None = None) -> None:
        super().__init__()
        # Plain strings: they go into the exported config.json.
        self.pooling = parse_pooling(pooling).value
        self.kind = parse_adapter(kind).value
        self.pooler = (pooler_layer(hidden_size, pretrained_pooler) if self.pooling == Pooling.pooler
                       else nn.Identity())
        if self.kind == AdapterKind.mlp:
            self.mlp: nn.Module = nn.Sequential(
                nn.Dropout(dropout), nn.Linear(hidden_size, adapter_hidden_size), nn.GELU())
            self.output_size = adapter_hidden_size
        else:
            self.mlp = nn.Identity()
            self.output_size = hidden_size
        self.dropout = nn.Dropout(dropout)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        pooled = self.pooler(pool(hidden_states, attention_mask, self.pooling))
        return self.dropout(self.mlp(pooled))


def pooler_layer(hidden_size: int, pretrained_pooler: nn.Module | None = None) -> nn.Sequential:
    """Linear(hidden, hidden) -> tanh, copied from `pretrained_pooler.dense` when given."""
    layer = nn.Sequential(nn.Linear(hidden_size, hidden_size), nn.Tanh())
    if pretrained_pooler is not None:
        layer[0].load_state_dict(pretrained_pooler.dense.state_dict())
    return layer
