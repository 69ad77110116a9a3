"""Pooling of the encoder's token states plus an optional MLP between backbone and head."""

from __future__ import annotations

import torch
from torch import nn

from cybulde.errors import CybuldeError

POOLINGS = ("cls", "mean")
ADAPTERS = ("none", "mlp")


class AdapterError(CybuldeError, ValueError):
    """An unknown pooling or adapter kind."""


def pool(hidden_states: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    if pooling == "cls":
        return hidden_states[:, 0]
    if pooling == "mean":
        mask = attention_mask.unsqueeze(-1).to(hidden_states.dtype)
        return (hidden_states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
    raise AdapterError(f"unknown pooling {pooling!r}: expected one of {list(POOLINGS)}")


class Adapter(nn.Module):
    """Pool, then (adapter 'mlp') Linear -> GELU -> Dropout; `output_size` feeds the head's Linear."""

    def __init__(self, hidden_size: int, pooling: str = "mean", kind: str = "none",
                 adapter_hidden_size: int = 256, dropout: float = 0.1) -> None:
        super().__init__()
        pooling, kind = getattr(pooling, "value", pooling), getattr(kind, "value", kind)
        if pooling not in POOLINGS:
            raise AdapterError(f"unknown pooling {pooling!r}: expected one of {list(POOLINGS)}")
        if kind not in ADAPTERS:
            raise AdapterError(f"unknown adapter {kind!r}: expected one of {list(ADAPTERS)}")
        self.pooling = pooling
        self.kind = kind
        if kind == "mlp":
            self.mlp: nn.Module = nn.Sequential(
                nn.Dropout(dropout), nn.Linear(hidden_size, adapter_hidden_size), nn.GELU())
            self.output_size = adapter_hidden_size
        else:
            self.mlp = nn.Identity()
            self.output_size = hidden_size
        self.dropout = nn.Dropout(dropout)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.mlp(pool(hidden_states, attention_mask, self.pooling)))
