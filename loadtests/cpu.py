"""Where the CPU went during a benchmark run: per process tree (by command name) and for the whole box.

Read from /proc, so a run on a shared host can say how much of the box other jobs used.
"""

from __future__ import annotations

import os
from pathlib import Path


def box_busy_seconds() -> float:
    """CPU seconds all CPUs spent busy so far (user, nice, system, irq, softirq), from /proc/stat."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in fields[:7])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def proc_cpu() -> dict[int, tuple[int, str, float]]:
    """pid -> (parent pid, command name, CPU seconds used so far) for every process."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        name = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2 :].split()
        out[int(entry.name)] = (int(fields[1]), name, (int(fields[11]) + int(fields[12])) / tick)
    return out


def tree_cpu(root: int) -> dict[str, float]:
    """CPU seconds of a process and its descendants, summed by command name."""
    procs = proc_cpu()
    keep = {root}
    changed = True
    while changed:
        changed = False
        for pid, (ppid, _, _) in procs.items():
            if ppid in keep and pid not in keep:
                keep.add(pid)
                changed = True
    totals: dict[str, float] = {}
    for pid in keep:
        if pid in procs:
            _, name, cpu = procs[pid]
            key = "valkey" if "valkey" in name else "python"
            totals[key] = totals.get(key, 0.0) + cpu
    return totals


def sum_cpu(roots: list[int]) -> dict[str, float]:
    total: dict[str, float] = {}
    for root in roots:
        for k, v in tree_cpu(root).items():
            total[k] = total.get(k, 0.0) + v
    return total


def cpu_per_request(before: dict[str, float], after: dict[str, float], requests: int) -> dict[str, float]:
    return {k: round((after.get(k, 0.0) - before.get(k, 0.0)) / max(requests, 1) * 1e6, 1) for k in after}
