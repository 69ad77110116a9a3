"""Bit-for-bit comparison of two exported models, failing with a message a person can act on.

Comparing the raw bytes with `==` would print megabytes of repr and hide the one fact that matters:
which tensors differ, and by how much.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

WEIGHTS_FILE = "model.safetensors"


def weights_file(path: Path) -> Path:
    return path / WEIGHTS_FILE if path.is_dir() else path


def weight_differences(first: Path, second: Path) -> list[str]:
    """One line per tensor that is not bit-identical (or missing on one side); empty when all are."""
    import torch
    from safetensors.torch import load_file

    left, right = load_file(weights_file(first)), load_file(weights_file(second))
    lines = [f"{name}: only in {weights_file(first)}" for name in sorted(left.keys() - right.keys())]
    lines += [f"{name}: only in {weights_file(second)}" for name in sorted(right.keys() - left.keys())]
    for name in sorted(left.keys() & right.keys()):
        a, b = left[name], right[name]
        if a.shape != b.shape or a.dtype != b.dtype:
            lines.append(f"{name}: {a.dtype}{list(a.shape)} vs {b.dtype}{list(b.shape)}")
        elif not torch.equal(a, b):
            unequal = (a != b).sum().item()
            gap = (a.double() - b.double()).abs().max().item()
            lines.append(f"{name}: {unequal} of {a.numel()} values differ, max |diff| {gap:.3g}")
    return lines


def assert_same_weights(first: Path, second: Path) -> None:
    """Both models (a folder holding model.safetensors, or the file) hold bit-identical weights."""
    a, b = weights_file(first).read_bytes(), weights_file(second).read_bytes()
    if a == b:
        return
    differences = weight_differences(first, second) or ["tensors equal; the files differ in header or order"]
    shown = "\n  ".join(differences[:20] + ([f"... {len(differences) - 20} more"] if len(differences) > 20 else []))
    raise AssertionError(
        f"weights differ: {weights_file(first)} (sha256 {hashlib.sha256(a).hexdigest()[:16]}) vs "
        f"{weights_file(second)} (sha256 {hashlib.sha256(b).hexdigest()[:16]}); "
        f"{len(differences)} tensors:\n  {shown}")
