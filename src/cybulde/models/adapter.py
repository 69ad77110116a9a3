"""Pooling of the encoder's token states plus an optional MLP between backbone and head.

Poolings: `mean` over the non-padding tokens, `cls` the first token's state, `pooler` the first
token's state through BERT's pooler (dense + tanh, as in `BertForSequenceClassification`), its
dense layer initialised from the pretrained backbone's pooler weights where the checkpoint has them.
"""

from __future__ import annotations

import torch
from torch import nn

from cybulde.errors import CybuldeError

POOLINGS = ("cls", "mean", "pooler")
FIRST_TOKEN_POOLINGS = ("cls", "pooler")
ADAPTERS = ("none", "mlp")


class AdapterError(CybuldeError, ValueError):
    """An unknown pooling or adapter kind."""


def pool(hidden_states: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    if pooling in FIRST_TOKEN_POOLINGS:
        return hidden_states[:, 0]
    if pooling == "mean":
        mask = attention_mask.unsqueeze(-1).to(hidden_states.dtype)
        return (hidden_states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
    raise AdapterError(f"unknown pooling {pooling!r}: expected one of {list(POOLINGS)}")


class Adapter(nn.Module):
    """Pool, then (adapter 'mlp') Linear -> GELU -> Dropout; `output_size` feeds the head's Linear.

    `pretrained_pooler`: the backbone's own pooler (a module with a `dense` Linear), whose weights
    initialise the dense layer of `pooling="pooler"`; without it that layer starts random.
    """

    def __init__(self, hidden_size: int, pooling: str = "mean", kind: str = "none",
                 adapter_hidden_size: int = 256, dropout: float = 0.1,
                 pretrained_pooler: nn.Module | None = None) -> None:
        super().__init__()
        pooling, kind = getattr(pooling, "value", pooling), getattr(kind, "value", kind)
        if pooling not in POOLINGS:
            raise AdapterError(f"unknown pooling {pooling!r}: expected one of {list(POOLINGS)}")
        if kind not in ADAPTERS:
            raise AdapterError(f"unknown adapter {kind!r}: expected one of {list(ADAPTERS)}")
        self.pooling = pooling
        self.kind = kind
        self.pooler = pooler_layer(hidden_size, pretrained_pooler) if pooling == "pooler" else nn.Identity()
        if kind == "mlp":
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
