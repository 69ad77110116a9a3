"""Pooling of the encoder's token states plus an optional MLP between backbone and head."""

from __future__ import annotations

import torch
from torch import nn

from cybulde.config.schema import Adapter as AdapterKind
from cybulde.config.schema import Pooling
from cybulde.errors import CybuldeError

# The allowed values, as the schema's enums list them (names kept for existing importers).
POOLINGS = tuple(member.value for member in Pooling)
ADAPTERS = tuple(member.value for member in AdapterKind)


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
    if parse_pooling(pooling) is Pooling.cls:
        return hidden_states[:, 0]
    mask = attention_mask.unsqueeze(-1).to(hidden_states.dtype)
    return (hidden_states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


class Adapter(nn.Module):
    """Pool, then (adapter 'mlp') Linear -> GELU -> Dropout; `output_size` feeds the head's Linear."""

    def __init__(self, hidden_size: int, pooling: str | Pooling = Pooling.mean,
                 kind: str | AdapterKind = AdapterKind.none, adapter_hidden_size: int = 256,
                 dropout: float = 0.1) -> None:
        super().__init__()
        # Plain strings: they go into the exported config.json.
        self.pooling = parse_pooling(pooling).value
        self.kind = parse_adapter(kind).value
        if self.kind == AdapterKind.mlp:
            self.mlp: nn.Module = nn.Sequential(
                nn.Dropout(dropout), nn.Linear(hidden_size, adapter_hidden_size), nn.GELU())
            self.output_size = adapter_hidden_size
        else:
            self.mlp = nn.Identity()
            self.output_size = hidden_size
        self.dropout = nn.Dropout(dropout)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.mlp(pool(hidden_states, attention_mask, self.pooling)))
