"""The precision rule: bf16 only where the hardware runs it natively."""

from __future__ import annotations

from pathlib import Path

import pytest

from cybulde.hardware import BF16, FP32, cpu_has_native_bf16, resolve_precision
from tests.helpers.cpus import WITH_BF16, WITHOUT_BF16, fake_cpu


@pytest.mark.parametrize(("cpuinfo", "expected"), [(WITH_BF16, BF16), (WITHOUT_BF16, FP32)])
def test_auto_follows_the_cpu_flags(tmp_path: Path, monkeypatch, cpuinfo: str, expected: str) -> None:
    fake_cpu(tmp_path, monkeypatch, cpuinfo)
    resolved = resolve_precision("auto", "cpu")
    assert resolved.precision == expected
    assert "Test CPU" in resolved.reason


def test_amx_counts_as_native_bf16(tmp_path: Path, monkeypatch) -> None:
    fake_cpu(tmp_path, monkeypatch, WITHOUT_BF16.replace("avx512_vnni", "amx_bf16 amx_tile"))
    assert cpu_has_native_bf16()


@pytest.mark.parametrize("explicit", [FP32, BF16])
def test_explicit_precision_wins_over_the_hardware(tmp_path: Path, monkeypatch, explicit: str) -> None:
    fake_cpu(tmp_path, monkeypatch, WITHOUT_BF16 if explicit == BF16 else WITH_BF16)
    assert resolve_precision(explicit, "cpu").precision == explicit


def test_unreadable_cpuinfo_means_fp32(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CYBULDE_CPUINFO", str(tmp_path / "absent"))
    assert resolve_precision("auto", "cpu").precision == FP32


def test_unknown_precision_is_refused() -> None:
    with pytest.raises(ValueError, match="expected one of"):
        resolve_precision("16-mixed", "cpu")
