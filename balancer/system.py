"""The appliance's own figures, as System Overview shows them beside the services: network
bandwidth, load average and memory, read from /proc.

Parsing is pure and takes the files' text. ``System`` does the reading; it keeps its previous
read of the interface counters, because a bandwidth is the difference between two reads.
A figure that cannot be read is left out and the reason given, never an error for the page.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from balancer.state import Snapshot

# Reads closer together than this keep the last rate: a rate over a few milliseconds is noise,
# and the overview in several browsers plus the API may all ask within one second.
MIN_INTERVAL = 1.0  # seconds


class Interface(Snapshot):
    name: str
    rx_bytes: int  # received since the interface came up
    tx_bytes: int  # sent since the interface came up
    rx_rate: float | None = None  # bytes per second; None until there are two reads
    tx_rate: float | None = None


class LoadAverage(Snapshot):
    one: float
    five: float
    fifteen: float
    cpus: int


class Memory(Snapshot):
    total: int  # bytes
    available: int  # what programs can still have without swapping
    swap_total: int
    swap_free: int

    @property
    def used(self) -> int:
        return self.total - self.available


class SystemFigures(Snapshot):
    at: float  # Unix time of the read
    interfaces: tuple[Interface, ...] = ()
    load: LoadAverage | None = None
    memory: Memory | None = None
    problems: tuple[str, ...] = ()  # why a figure is missing


def parse_net_dev(text: str) -> dict[str, tuple[int, int]]:
    """/proc/net/dev: each interface's received and sent bytes."""
    counters = {}
    for number, line in enumerate(text.splitlines(), 1):
        if ":" not in line:
            continue  # the two header lines
        name, _, fields = line.partition(":")
        values = fields.split()
        if len(values) < 16 or not all(value.isdigit() for value in values):
            raise ValueError(f"/proc/net/dev line {number}: not 16 counters: {line.strip()!r}")
        counters[name.strip()] = (int(values[0]), int(values[8]))
    return counters


def parse_meminfo(text: str) -> Memory:
    """/proc/meminfo, whose sizes are in kB (KiB, in fact)."""
    sizes = {}
    for number, line in enumerate(text.splitlines(), 1):
        key, _, value = line.partition(":")
        amount, *unit = value.split() or [""]
        if not amount.isdigit():
            raise ValueError(f"/proc/meminfo line {number}: not a size: {line.strip()!r}")
        sizes[key] = int(amount) * (1024 if unit == ["kB"] else 1)
    missing = [key for key in ("MemTotal", "MemFree") if key not in sizes]
    if missing:
        raise ValueError(f"/proc/meminfo: no {', '.join(missing)}")
    # Kernels before 3.14 have no MemAvailable; free(1) then counts caches as available.
    available = sizes.get(
        "MemAvailable", sizes["MemFree"] + sizes.get("Buffers", 0) + sizes.get("Cached", 0)
    )
    return Memory(
        total=sizes["MemTotal"],
        available=available,
        swap_total=sizes.get("SwapTotal", 0),
        swap_free=sizes.get("SwapFree", 0),
    )


@dataclass(frozen=True)
class NetRead:
    at: float  # monotonic
    counters: dict[str, tuple[int, int]]


def rates(before: NetRead, after: NetRead) -> dict[str, tuple[float, float]]:
    """Bytes per second each way between two reads, for interfaces in both whose counters did
    not go back (an interface that was re-created starts again from zero)."""
    seconds = after.at - before.at
    found = {}
    for name, (rx, tx) in after.counters.items():
        if name in before.counters and seconds > 0:
            rx_before, tx_before = before.counters[name]
            if rx >= rx_before and tx >= tx_before:
                found[name] = ((rx - rx_before) / seconds, (tx - tx_before) / seconds)
    return found


class System:
    def __init__(
        self,
        proc: Path = Path("/proc"),
        *,
        clock: Callable[[], float] = time.monotonic,
        load: Callable[[], tuple[float, float, float]] = os.getloadavg,
    ) -> None:
        self._proc = proc
        self._clock = clock
        self._load = load
        self._previous: NetRead | None = None
        self._rates: dict[str, tuple[float, float]] = {}

    def figures(self) -> SystemFigures:
        problems = []
        interfaces: tuple[Interface, ...] = ()
        load = memory = None
        try:
            interfaces = self._interfaces()
        except (OSError, ValueError) as error:
            problems.append(f"network bandwidth: {error}")
        try:
            one, five, fifteen = self._load()
            load = LoadAverage(one=one, five=five, fifteen=fifteen, cpus=os.cpu_count() or 1)
        except OSError as error:
            problems.append(f"load average: {error}")
        try:
            memory = parse_meminfo((self._proc / "meminfo").read_text())
        except (OSError, ValueError) as error:
            problems.append(f"memory: {error}")
        return SystemFigures(
            at=time.time(),
            interfaces=interfaces,
            load=load,
            memory=memory,
            problems=tuple(problems),
        )

    def _interfaces(self) -> tuple[Interface, ...]:
        now = NetRead(self._clock(), parse_net_dev((self._proc / "net" / "dev").read_text()))
        if self._previous is None:
            self._previous = now
        elif now.at - self._previous.at >= MIN_INTERVAL:
            self._rates = rates(self._previous, now)
            self._previous = now
        found = []
        for name, (rx, tx) in sorted(now.counters.items()):
            rx_rate, tx_rate = self._rates.get(name, (None, None))
            found.append(
                Interface(name=name, rx_bytes=rx, tx_bytes=tx, rx_rate=rx_rate, tx_rate=tx_rate)
            )
        return tuple(found)
