"""Bit-for-bit comparison of model weights, failing with a message a person can act on.

Comparing the raw bytes with `==` would print megabytes of repr and hide the one fact that matters:
which tensors differ, and by how much.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from cybulde.models.export import WEIGHTS_FILE


def tensor_differences(left: dict[str, torch.Tensor], right: dict[str, torch.Tensor]) -> list[str]:
    """One line per tensor that is not bit-identical (or missing on one side); empty when all are."""
    lines = [f"{name}: only in the first" for name in sorted(left.keys() - right.keys())]
    lines += [f"{name}: only in the second" for name in sorted(right.keys() - left.keys())]
    for name in sorted(left.keys() & right.keys()):
        a, b = left[name], right[name]
        if a.shape != b.shape or a.dtype != b.dtype:
            lines.append(f"{name}: {a.dtype}{list(a.shape)} vs {b.dtype}{list(b.shape)}")
        elif not torch.equal(a, b):
            unequal = (a != b).sum().item()
            gap = (a.double() - b.double()).abs().max().item()
            lines.append(f"{name}: {unequal} of {a.numel()} values differ, max |diff| {gap:.3g}")
    return lines


def assert_same_weights(first_model: Path, second_model: Path) -> None:
    """Both exported models (folders holding model.safetensors) hold bit-identical weights."""
    from safetensors.torch import load_file

    first, second = first_model / WEIGHTS_FILE, second_model / WEIGHTS_FILE
    a, b = first.read_bytes(), second.read_bytes()
    if a == b:
        return
    differences = tensor_differences(load_file(first), load_file(second)) or [
        "tensors equal; the files differ in header or order"]
    shown = "\n  ".join(differences[:20] + ([f"... {len(differences) - 20} more"] if len(differences) > 20 else []))
    raise AssertionError(
        f"weights differ: {first} (sha256 {hashlib.sha256(a).hexdigest()[:16]}) vs "
        f"{second} (sha256 {hashlib.sha256(b).hexdigest()[:16]}); {len(differences)} tensors:\n  {shown}")
