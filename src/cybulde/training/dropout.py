"""Dropout whose masks are drawn four to a 64-bit random number (`train.dropout_masks: packed`).

torch's CPU dropout draws its masks with `bernoulli_`, one call of the CPU generator per element: in
a MiniLM training step on CPU that is about a quarter of the step's time, more than the optimizer
(docs/speed.md). `packed` fills a quarter as many 64-bit words from the same generator
(`random_` over the full int64 range) and reads each word as four 16-bit numbers: an element is
dropped when its number falls in the lowest `round(p * 65536)` of the 65536 values. Kept elements
are scaled by `65536 / (65536 - round(p * 65536))`, so the expectation of every element is unchanged
exactly; the drop probability is `p` rounded to a multiple of 1/65536 (0.1 becomes 0.100006).

The masks are other draws than torch's, so a model trains to other weights than with `torch`, as
with another seed; the effect on quality is measured, not assumed (docs/speed.md). They come from
torch's default generator, so the seed and a resumed run's restored generator state decide them as
they decide torch's own masks: runs stay reproducible and resume stays bit-identical.

`use_packed_dropout` puts `PackedDropout` in place of every `nn.Dropout` of a model (same `p`, no
parameters: the state dict does not change) and points a Hugging Face backbone at `packed_sdpa`,
which computes attention as `sdpa` does when there is no dropout, and by hand with packed masks on
the attention probabilities when there is (training). Exported models are rebuilt from their
config.json and use torch's modules: dropout is off at inference anyway.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

TORCH = "torch"
PACKED = "packed"
DROPOUT_MASKS = (TORCH, PACKED)

PACKED_SDPA = "packed_sdpa"
_LEVELS = 1 << 16  # a mask element is one 16-bit number
_PER_WORD = 4  # 16-bit numbers in a 64-bit random word


def dropped_levels(p: float) -> int:
    """How many of the 65536 levels of a 16-bit number drop an element: `p` rounded to 1/65536."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    return round(p * _LEVELS)


def packed_keep_mask(shape: torch.Size | tuple[int, ...], p: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """A boolean mask of `shape`, True where an element is kept, drawn from torch's default generator
    (of `device`) four elements per 64-bit draw."""
    count = math.prod(shape)
    words = torch.empty((count + _PER_WORD - 1) // _PER_WORD, dtype=torch.int64, device=device)
    words.random_(-(1 << 63), None)  # every bit uniform; random_() alone leaves the sign bit 0
    levels = words.view(torch.int16)[:count].view(shape)
    return levels >= torch.iinfo(torch.int16).min + dropped_levels(p)


def keep_scale(p: float) -> float:
    """What kept elements are multiplied by, so that the mean of every element is unchanged."""
    return _LEVELS / (_LEVELS - dropped_levels(p))


class _PackedDropoutFunction(torch.autograd.Function):
    """y = x * keep * scale, with the boolean mask saved for the backward pass (as torch's dropout)."""

    @staticmethod
    def forward(ctx, inputs: torch.Tensor, p: float) -> torch.Tensor:
        keep = packed_keep_mask(inputs.shape, p, inputs.device)
        scale = keep_scale(p)
        ctx.save_for_backward(keep)
        ctx.scale = scale
        # native_dropout_backward(x, mask, scale) is x * mask * scale in one pass: the forward too
        return torch.ops.aten.native_dropout_backward(inputs, keep, scale)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:
        (keep,) = ctx.saved_tensors
        return torch.ops.aten.native_dropout_backward(grad_output, keep, ctx.scale), None


def packed_dropout(inputs: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """`torch.nn.functional.dropout` with packed masks."""
    if not training or p == 0.0:
        return inputs
    return _PackedDropoutFunction.apply(inputs, p)


class PackedDropout(nn.Dropout):
    """`nn.Dropout` (same `p`, same behaviour in eval mode) with packed masks."""

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return packed_dropout(inputs, self.p, self.training)


def packed_sdpa_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                          attention_mask: torch.Tensor | None, dropout: float = 0.0,
                          scaling: float | None = None, **kwargs) -> tuple[torch.Tensor, None]:
    """A Hugging Face attention function: `sdpa` without dropout; with dropout, softmax(q k^T * scaling
    + mask) with packed dropout, times v. `attention_mask` is what `sdpa` gets: None, a boolean mask
    (True: attend) or an additive float mask, broadcastable to [batch, heads, query, key]. Causal
    attention and position biases (decoders, T5-like models) are left to `sdpa` and torch's masks."""
    if dropout == 0.0 or kwargs.get("is_causal") or getattr(module, "is_causal", False) \
            or kwargs.get("position_bias") is not None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    scores = torch.matmul(query, key.transpose(-2, -1)) * scaling
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + attention_mask
    probabilities = packed_dropout(torch.softmax(scores, dim=-1), dropout)
    return torch.matmul(probabilities.to(value.dtype), value).transpose(1, 2).contiguous(), None


def register_packed_sdpa() -> None:
    """Make `packed_sdpa` an attention implementation Hugging Face models accept (masks built as sdpa's)."""
    AttentionInterface.register(PACKED_SDPA, packed_sdpa_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(PACKED_SDPA, sdpa_mask)


def use_packed_dropout(model: nn.Module) -> None:
    """Swap every `nn.Dropout` of `model` for a `PackedDropout` of the same `p`, and make its Hugging
    Face backbones (those using `sdpa`) drop attention probabilities with packed masks too."""
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if type(child) is nn.Dropout:
                setattr(parent, name, PackedDropout(child.p))
    backbones = [module for module in model.modules()
                 if getattr(getattr(module, "config", None), "_attn_implementation", None) == "sdpa"]
    if backbones:
        register_packed_sdpa()
    for backbone in backbones:
        backbone.config._attn_implementation = PACKED_SDPA
