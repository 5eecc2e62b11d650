"""Process-tree CPU time and memory from /proc (Linux only, no dependencies)."""

from __future__ import annotations

import os
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _read_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the ``(comm)`` field (index 0 = state)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    # comm may contain spaces and parentheses: split after the last ')'
    return raw[raw.rfind(b")") + 2 :].decode().split()


def descendants(root: int) -> list[int]:
    """``root`` and every live process below it."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        fields = _read_stat(int(name))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def tree_cpu_seconds(root: int) -> float:
    """utime+stime of the live tree plus the reaped children's (cutime+cstime)."""
    ticks = 0
    for pid in descendants(root):
        fields = _read_stat(pid)
        if fields is not None:
            # after comm: state=0 ppid=1 ... utime=11 stime=12 cutime=13 cstime=14
            ticks += int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
    return ticks / CLK_TCK


def _status_kb(pid: int, key: bytes) -> int:
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_rss_mb(root: int) -> float:
    """Sum of VmRSS over the tree, in MB (shared pages are counted once per process)."""
    return sum(_status_kb(p, b"VmRSS:") for p in descendants(root)) / 1024.0


def tree_peak_rss_mb(root: int) -> float:
    """Sum of VmHWM (per-process peak RSS) over the live tree, in MB."""
    return sum(_status_kb(p, b"VmHWM:") for p in descendants(root)) / 1024.0


def cpu_busy_seconds() -> dict[str, float]:
    """Busy (non-idle, non-iowait) seconds per CPU line of /proc/stat: ``cpu``, ``cpu0``, ..."""
    out: dict[str, float] = {}
    with open("/proc/stat") as f:
        for line in f:
            if not line.startswith("cpu"):
                break
            name, *vals = line.split()
            ticks = [int(v) for v in vals[:8]]  # user nice system idle iowait irq softirq steal
            out[name] = (sum(ticks) - ticks[3] - ticks[4]) / CLK_TCK
    return out


def idle_facts() -> dict[str, str]:
    """How this machine's idle CPUs wait: the cpuidle driver and, under KVM's ``haltpoll``,
    how long an idle guest CPU polls before it halts (recorded with each run; see the
    README's Pinning section: absolute figures of machines that differ here do not compare)."""
    facts: dict[str, str] = {}
    for name, path in (
        ("cpuidle_driver", "/sys/devices/system/cpu/cpuidle/current_driver"),
        ("guest_halt_poll_ns", "/sys/module/haltpoll/parameters/guest_halt_poll_ns"),
    ):
        try:
            facts[name] = Path(path).read_text().strip()
        except OSError:
            continue
    return facts
