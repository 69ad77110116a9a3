"""What the hardware can do, and the numeric precision chosen from it.

`resolve_precision("auto", accelerator)` is the one rule for training and inference alike:
bf16-mixed where bf16 is native (a CUDA GPU with bf16, or a CPU with AVX512-BF16 or AMX), 32-true
otherwise. On a CPU without those instructions bf16 matmuls are emulated and far slower than fp32.
An explicit precision ("32-true", "bf16-mixed") is kept as it is.

`resolve_workers("auto", accelerator)` is the rule for how many training processes a node runs: one
per GPU on a GPU node; one process using every core on a CPU node. Ranks on one CPU node split the
same cores and add a gloo all-reduce of every gradient to each step, so they train slower than one
process using those cores (measured in docs/speed.md). An explicit number is kept as it is.

`$CYBULDE_CPUINFO` names a file to read instead of /proc/cpuinfo (tests fake the flags with it).
`autocast(precision, device)` runs inference in the resolved precision (bf16 autocast or nothing).
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

AUTO = "auto"
FP32 = "32-true"
BF16 = "bf16-mixed"
PRECISIONS = (AUTO, FP32, BF16)
NATIVE_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
CPUINFO_ENV = "CYBULDE_CPUINFO"


@dataclass(frozen=True)
class ResolvedPrecision:
    precision: str  # FP32 or BF16: what Lightning / autocast is given
    requested: str  # as configured (AUTO or an explicit value)
    reason: str  # one line, for the logs and the MLflow run


def cpu_flags(cpuinfo: str | Path | None = None) -> set[str] | None:
    """The CPU's feature flags from /proc/cpuinfo (or `cpuinfo`); None where they cannot be read."""
    path = Path(cpuinfo or os.environ.get(CPUINFO_ENV) or "/proc/cpuinfo")
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return set(value.split())
    return set()


def cpu_model_name(cpuinfo: str | Path | None = None) -> str:
    path = Path(cpuinfo or os.environ.get(CPUINFO_ENV) or "/proc/cpuinfo")
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "unknown CPU"
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            return value.strip()
    return "unknown CPU"


def cpu_has_native_bf16(cpuinfo: str | Path | None = None) -> bool:
    """AVX512-BF16 or AMX present; False when the flags cannot be read (fp32 is always safe)."""
    flags = cpu_flags(cpuinfo)
    return bool(flags) and any(flag in flags for flag in NATIVE_BF16_CPU_FLAGS)


def cuda_has_bf16() -> bool:
    # the config schema imports this module: torch only when a precision is resolved
    import torch

    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def resolve_precision(requested: str, accelerator: str) -> ResolvedPrecision:
    """The precision to run with on `accelerator` ("cpu" | "gpu") for the configured `requested`."""
    if requested not in PRECISIONS:
        raise ValueError(f"unknown precision {requested!r}; expected one of {list(PRECISIONS)}")
    if requested != AUTO:
        return ResolvedPrecision(requested, requested, f"{requested} as configured")
    if accelerator == "gpu":
        if cuda_has_bf16():
            return ResolvedPrecision(BF16, AUTO, "auto: the GPU supports bf16")
        return ResolvedPrecision(FP32, AUTO, "auto: no bf16 support on this GPU")
    if cpu_has_native_bf16():
        return ResolvedPrecision(BF16, AUTO, f"auto: {cpu_model_name()} has native bf16 (AVX512-BF16/AMX)")
    return ResolvedPrecision(FP32, AUTO, f"auto: {cpu_model_name()} has no native bf16 (AVX512-BF16/AMX)")


@dataclass(frozen=True)
class ResolvedWorkers:
    nproc_per_node: int  # training processes on each node
    requested: str  # as configured ("auto" or a number)
    reason: str  # one line, for the logs and the MLflow run


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity), not every core of the machine."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def gpu_count() -> int:
    import torch

    return torch.cuda.device_count()


def is_worker_count(requested: str) -> bool:
    """`launch.nproc_per_node` as the schema allows it: "auto" or a positive integer."""
    return requested == AUTO or (requested.isdigit() and int(requested) >= 1)


def resolve_workers(requested: str, accelerator: str) -> ResolvedWorkers:
    """The training processes per node for `launch.nproc_per_node` = `requested` on `accelerator`."""
    if requested != AUTO:
        if not is_worker_count(requested):
            raise ValueError(f"nproc_per_node must be 'auto' or a positive integer, got {requested!r}")
        return ResolvedWorkers(int(requested), requested, f"{requested} as configured")
    if accelerator == "gpu":
        gpus = gpu_count()
        if gpus < 1:
            raise ValueError("nproc_per_node=auto with accelerator gpu, but no CUDA GPU is visible")
        return ResolvedWorkers(gpus, AUTO, f"auto: one process per GPU ({gpus} GPU(s))")
    return ResolvedWorkers(1, AUTO, f"auto: one process using this CPU node's {available_cores()} core(s) "
                                    f"({cpu_model_name()})")


def autocast(precision: str, device: Any) -> AbstractContextManager:
    """bf16 autocast on `device` (a torch.device or "cpu"/"cuda") for BF16, no context for FP32."""
    if precision == FP32:
        return nullcontext()
    if precision != BF16:
        raise ValueError(f"autocast needs a resolved precision ({FP32!r} or {BF16!r}), got {precision!r}")
    import torch

    device_type = getattr(device, "type", device)
    return torch.autocast(device_type=str(device_type), dtype=torch.bfloat16)
