"""Processes the tests started, and what runs below them, read from /proc and killed by id."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path


def read_proc(pid: int, name: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/{name}").read_bytes()
    except OSError:
        return b""


def is_alive(pid: int) -> bool:
    stat = read_proc(pid, "stat").decode()
    return bool(stat) and stat.rsplit(")", 1)[1].split()[0] != "Z"


def descendants(pid: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = read_proc(int(entry.name), "stat").decode()
            if stat:
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, its_parent in parents.items() if its_parent == parent]
        found.extend(children)
        frontier.extend(children)
    return found


def own_peak_rss_kib(pid: int) -> int:
    """VmHWM of `pid`: the peak of its current memory map only (0 once it has exited).

    Not wait4's ru_maxrss: Linux carries the highest RSS across exec, and a child spawned by this
    process starts from a copy (or, with vfork, the very map) of it, so ru_maxrss would report this
    test process's own peak whenever that is the larger."""
    status = read_proc(pid, "status").decode(errors="replace")
    return next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), 0)


def peak_rss_mib(pid: int) -> float:
    """The peak resident memory of `pid` and of every process below it, summed, in MiB."""
    return sum(own_peak_rss_kib(member) for member in (pid, *descendants(pid))) / 1024


def stop_group(process: subprocess.Popen) -> None:
    """SIGKILL `process`, its group and every process below it (torchrun workers have sessions of their own)."""
    below = descendants(process.pid)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    for pid in below:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    process.wait()
