"""Seeds and deterministic kernels: the same params and data give bit-identical weights on one machine.

Bit-identical holds for the same hardware, thread count per rank, world size and library versions.
Across CPU types (different SIMD paths), thread counts or on GPUs (atomics in some kernels, cuBLAS
workspaces) results can differ in the last bits; metrics then agree only approximately.
"""

from __future__ import annotations

import os

import lightning.pytorch as pl
import torch


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices) and ask torch for deterministic kernels."""
    # cuBLAS needs a fixed workspace for deterministic matmuls; must be set before CUDA starts.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    os.environ["PYTHONHASHSEED"] = str(seed)
    pl.seed_everything(seed, workers=True, verbose=False)
    torch.use_deterministic_algorithms(True, warn_only=True)
    # Deterministic mode also fills every new tensor's memory with NaN to expose reads of uninitialized
    # memory; no kernel we run reads it (the weights are bit-identical without it), and the fill slowed
    # CPU training by 3-20% (docs/speed.md).
    torch.utils.deterministic.fill_uninitialized_memory = False
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
