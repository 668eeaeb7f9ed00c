"""CPU used by process trees, from /proc: a tree's processes now, each with the CPU of its
reaped children, so a run worker that ended inside the window still counts (in its parent)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds of the process and its reaped children)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # after the command: state ppid ... utime(14) stime(15) cutime(16) cstime(17), 1-based from pid
    return int(fields[1]), sum(int(v) for v in fields[11:15]) / TICKS


def tree_cpu_seconds(roots: Iterable[int]) -> float:
    stats = {int(p.name): s for p in Path("/proc").iterdir() if p.name.isdigit() and (s := _stat(int(p.name)))}
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in stats.items():
        children.setdefault(parent, []).append(pid)
    total, pending, seen = 0.0, [r for r in roots if r in stats], set()
    while pending:
        pid = pending.pop()
        if pid in seen:
            continue
        seen.add(pid)
        total += stats[pid][1]
        pending += children.get(pid, [])
    return total


class CpuMeter:
    """Cores used by named groups of process trees between ``start`` and ``stop``."""

    def __init__(self, groups: Mapping[str, Iterable[int]]) -> None:
        self.groups = {name: list(pids) for name, pids in groups.items()}
        self._start: dict[str, float] = {}
        self._started = 0.0

    def start(self) -> None:
        self._started = time.monotonic()
        self._start = {name: tree_cpu_seconds(pids) for name, pids in self.groups.items()}

    def stop(self) -> dict[str, float]:
        seconds = time.monotonic() - self._started
        used = {name: (tree_cpu_seconds(pids) - self._start[name]) / seconds for name, pids in self.groups.items()}
        return {**{f"{name}_cores": round(cores, 3) for name, cores in used.items()}, "all_cores": round(sum(used.values()), 3)}
