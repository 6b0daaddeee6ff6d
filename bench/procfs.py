"""What /proc says about a proxy's processes: which they are, the CPU time and memory they use,
the cores they may run on and the file descriptors they may open. The parsers are pure."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

PROC = Path("/proc")
TICKS = os.sysconf("SC_CLK_TCK")


def parse_stat(text: str) -> tuple[int, float, float]:
    """``/proc/<pid>/stat``: the parent's pid and the CPU seconds used in user and in system
    mode, by every thread. The command name may hold spaces and parentheses: fields follow the
    last ``)``."""
    fields = text[text.rindex(")") + 2 :].split()
    # After the name: state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime
    return int(fields[1]), int(fields[11]) / TICKS, int(fields[12]) / TICKS


def parse_cpu_list(text: str) -> set[int]:
    """A kernel CPU list such as ``0-2,4`` as a set."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        if part:
            first, _, last = part.partition("-")
            cpus.update(range(int(first), int(last or first) + 1))
    return cpus


def parse_cpu_times(text: str) -> dict[int, tuple[int, int]]:
    """``/proc/stat``: each CPU's busy and total clock ticks since boot; busy is everything
    but idle and iowait (softirq too: loopback traffic is processed there)."""
    found = {}
    for line in text.splitlines():
        name, *values = line.split()
        if name.startswith("cpu") and name[3:].isdigit():
            user, nice, system, idle, iowait, irq, softirq, steal = map(int, values[:8])
            total = user + nice + system + idle + iowait + irq + softirq + steal
            found[int(name[3:])] = (total - idle - iowait, total)
    return found


def busy_percent(
    before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]], cpus: set[int]
) -> float | None:
    """How busy ``cpus`` were between two readings of ``parse_cpu_times``, in percent."""
    busy = sum(after[c][0] - before[c][0] for c in cpus)
    total = sum(after[c][1] - before[c][1] for c in cpus)
    return busy / total * 100 if total > 0 else None


def field(text: str, name: str) -> str:
    """The value of ``name:`` in a ``status``, ``limits`` or ``smaps_rollup`` style text."""
    for line in text.splitlines():
        if line.startswith(name):
            return line[len(name) :].strip(" :\t")
    raise ValueError(f"no {name!r} in {text[:80]!r}")


def format_cpus(cpus: Iterable[int]) -> str:
    return ",".join(str(c) for c in sorted(cpus))


# --- reading /proc -----------------------------------------------------------------------------


def family(root: int) -> list[int]:
    """``root`` and every process descended from it (HAProxy's workers, the engine's)."""
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            try:
                parent, *_ = parse_stat((entry / "stat").read_text())
            except (OSError, ValueError):
                continue  # it ended meanwhile
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def cpu_times() -> dict[int, tuple[int, int]]:
    return parse_cpu_times((PROC / "stat").read_text())


def cpu_split(pids: Iterable[int]) -> tuple[float, float]:
    """CPU seconds used in user and in system mode by ``pids``, those still there."""
    user = system = 0.0
    for pid in pids:
        try:
            _, in_user, in_system = parse_stat((PROC / str(pid) / "stat").read_text())
        except (OSError, ValueError):
            continue
        user += in_user
        system += in_system
    return user, system


def cpu_seconds(pids: Iterable[int]) -> float:
    return sum(cpu_split(pids))


def pss_kib(pids: Iterable[int]) -> int:
    """Proportional resident memory: pages a forked worker shares with its master count
    once between them, not once for each."""
    total = 0
    for pid in pids:
        text = (PROC / str(pid) / "smaps_rollup").read_text()
        total += int(field(text, "Pss").split()[0])
    return total


def allowed_cpus(pid: int) -> dict[int, set[int]]:
    """Each thread's ``Cpus_allowed_list``: HAProxy's threads are pinned one by one."""
    found = {}
    for task in (PROC / str(pid) / "task").iterdir():
        text = (task / "status").read_text()
        found[int(task.name)] = parse_cpu_list(field(text, "Cpus_allowed_list"))
    return found


def open_files_limit(pid: int) -> int:
    """The soft limit on open files the process runs with (it may have raised its own)."""
    line = field((PROC / str(pid) / "limits").read_text(), "Max open files")
    return int(line.split()[0])


def command(pid: int) -> str:
    return (PROC / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
