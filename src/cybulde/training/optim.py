"""AdamW whose token-embedding table is updated lazily: only the rows a batch used.

The embedding table of MiniLM is 30522 x 384 (11.7M of the model's 22.7M weights), yet a batch of 32
tweets touches about a thousand of its rows. With a dense gradient, every step writes a zero-filled
gradient for the whole table and AdamW reads and writes its weights and both moments in full: about
a seventh of a CPU step's time (docs/speed.md). With `train.embedding_updates: lazy` the table gets
a sparse gradient (`nn.Embedding(sparse=True)`) and `LazyEmbeddingAdamW` updates only the rows it
holds, with the same formulas as AdamW (bias correction by the global step, decoupled weight decay
on the updated rows).

What changes against dense AdamW: a row that a batch does not use is left as it is. Dense AdamW
would still move it by its decaying first moment and shrink it by the weight decay. This is the
lazy Adam of TensorFlow's `LazyAdam` and of `torch.optim.SparseAdam`. It is not a float-rounding
difference, so its effect on quality is measured, not assumed (docs/speed.md). Rows that every batch
uses are updated exactly as AdamW would update them (tested).

Gradient clipping sees the sparse gradient through `clip_grad_norm`: the norm of a coalesced sparse
gradient is the norm of its values.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import nn

DENSE = "dense"
LAZY = "lazy"
EMBEDDING_UPDATES = (DENSE, LAZY)


def use_sparse_embedding_gradients(model: nn.Module) -> None:
    """Make the backbone's token-embedding table produce sparse gradients (only the rows looked up)."""
    model.backbone.get_input_embeddings().sparse = True


class LazyEmbeddingAdamW(torch.optim.AdamW):
    """`torch.optim.AdamW` (fused where available) for dense gradients; a parameter whose gradient is
    sparse gets the lazy update of the rows it holds. Its state has AdamW's keys (`step`, `exp_avg`,
    `exp_avg_sq`), so checkpoints save and restore it like any AdamW state."""

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for parameter in group["params"]:
                if parameter.grad is not None and parameter.grad.is_sparse:
                    self._lazy_update(parameter, group)
                    parameter.grad = None  # AdamW below skips parameters without a gradient
        super().step()
        return loss

    def _lazy_update(self, parameter: torch.Tensor, group: dict) -> None:
        gradient = parameter.grad.coalesce()
        rows, values = gradient.indices()[0], gradient.values()
        state = self.state[parameter]
        if not state:
            state["step"] = torch.tensor(0.0, dtype=torch.float32, device=parameter.device)
            state["exp_avg"] = torch.zeros_like(parameter, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(parameter, memory_format=torch.preserve_format)
        state["step"] += 1
        step = float(state["step"])
        beta1, beta2 = group["betas"]
        lr, eps = float(group["lr"]), group["eps"]
        first = state["exp_avg"][rows].lerp_(values, 1 - beta1)
        second = state["exp_avg_sq"][rows].mul_(beta2).addcmul_(values, values, value=1 - beta2)
        state["exp_avg"][rows] = first
        state["exp_avg_sq"][rows] = second
        weights = parameter[rows].mul_(1 - lr * group["weight_decay"])
        denominator = second.sqrt().div_(math.sqrt(1 - beta2 ** step)).add_(eps)  # AdamW's order of operations
        parameter[rows] = weights.addcdiv_(first, denominator, value=-lr / (1 - beta1 ** step))


def clip_grad_norm(parameters: Iterable[torch.Tensor], max_norm: float) -> torch.Tensor:
    """`torch.nn.utils.clip_grad_norm_` over dense and sparse gradients alike (the total 2-norm of all
    of them); with dense gradients only it is exactly that function."""
    parameters = [parameter for parameter in parameters if parameter.grad is not None]
    if not any(parameter.grad.is_sparse for parameter in parameters):
        return nn.utils.clip_grad_norm_(parameters, max_norm)
    gradients = []
    for parameter in parameters:
        if parameter.grad.is_sparse:
            parameter.grad = parameter.grad.coalesce()  # duplicates summed: the norm is its values'
            gradients.append(parameter.grad.values())
        else:
            gradients.append(parameter.grad)
    total_norm = nn.utils.get_total_norm(gradients)
    scale = torch.clamp(max_norm / (total_norm + 1e-6), max=1.0)
    for gradient in gradients:
        gradient.mul_(scale.to(gradient.dtype))
    return total_norm
