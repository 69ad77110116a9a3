"""Child processes under a memory limit (`ulimit -v`), with their peak resident memory.

A memory-bounded test runs its command through `bash -c 'ulimit -v ...; exec ...'`: a regression
then fails the command (MemoryError, a failed allocation) instead of exhausting the machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from tests.helpers.processes import own_peak_rss_kib

MIB = 2**20


@dataclass(frozen=True)
class Finished:
    returncode: int
    stdout: str
    stderr: str
    peak_rss_mib: float  # the child's own peak resident set size (VmHWM since its exec)
    seconds: float


def cybulde_command(*args: str) -> list[str]:
    return [str(Path(sys.executable).parent / "cybulde"), *args]


def quiet_environment() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def under_memory_limit(argv: list[str], limit_mib: int) -> list[str]:
    """`argv` run by bash after `ulimit -v` (virtual memory, KiB) of `limit_mib`; exec keeps the pid."""
    return ["bash", "-c", f'ulimit -v {limit_mib * 1024} && exec "$@"', "bash", *argv]


def start_bounded(argv: list[str], limit_mib: int, stdin: Any = subprocess.DEVNULL) -> tuple[subprocess.Popen, IO, IO]:
    """Start `argv` under the limit, its output into temporary files (read by `finish`)."""
    stdout, stderr = tempfile.TemporaryFile(), tempfile.TemporaryFile()
    process = subprocess.Popen(under_memory_limit(argv, limit_mib), stdin=stdin, stdout=stdout, stderr=stderr,
                               env=quiet_environment())
    return process, stdout, stderr


def finish(process: subprocess.Popen, stdout: IO, stderr: IO, started: float, timeout_s: float = 120.0) -> Finished:
    """Wait for the child (killed after `timeout_s`), with its own peak RSS polled every 10 ms (a
    refusal still runs the interpreter's shutdown for tens of ms after its peak)."""
    deadline = time.monotonic() + timeout_s
    peak_kib = 0
    while True:
        peak_kib = max(peak_kib, own_peak_rss_kib(process.pid))
        pid, status, _ = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            process.kill()
            pid, status, _ = os.wait4(process.pid, 0)
            break
        time.sleep(0.01)
    seconds = time.monotonic() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    outputs = []
    for stream in (stdout, stderr):
        stream.seek(0)
        outputs.append(stream.read().decode("utf-8", "replace"))
        stream.close()
    return Finished(process.returncode, outputs[0], outputs[1], peak_kib / 1024, seconds)


def run_bounded(argv: list[str], limit_mib: int, stdin: Any = subprocess.DEVNULL,
                timeout_s: float = 120.0) -> Finished:
    started = time.monotonic()
    process, stdout, stderr = start_bounded(argv, limit_mib, stdin=stdin)
    return finish(process, stdout, stderr, started, timeout_s)
