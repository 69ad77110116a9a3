"""A fake /proc/cpuinfo, so the precision rule (`cybulde.hardware`) sees a CPU with or without bf16."""

from __future__ import annotations

from pathlib import Path

import pytest

WITH_BF16 = "processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: fpu sse avx2 avx512f avx512_bf16\n"
WITHOUT_BF16 = "processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: fpu sse avx2 avx512f avx512_vnni\n"


def fake_cpu(folder: Path, monkeypatch: pytest.MonkeyPatch, cpuinfo: str) -> Path:
    """Write `cpuinfo` to `folder`/cpuinfo and point CYBULDE_CPUINFO at it; returns the file."""
    path = folder / "cpuinfo"
    path.write_text(cpuinfo)
    monkeypatch.setenv("CYBULDE_CPUINFO", str(path))
    return path
