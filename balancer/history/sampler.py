"""The sampler: every 10 s, the counters the node already keeps become one sample of history.

It reads what System Overview reads (the engine's status, the system's figures, the pair's
view) and nothing more, so the engine does no extra work; the write runs in a thread, in one
transaction. An engine that cannot be read leaves a gap in its series, not a stopped sampler.
A counter that went back (an engine restart, an HAProxy reload) counts from zero again: its
increase is its new value, never a negative rate.

Each real server's health changes are kept with their reason: those the event stream told of
since the last tick, at the moment they happened, and any the engine's status shows that were
not told (the first tick after a start, events missed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from balancer import events
from balancer.history.store import Change, History, Point
from balancer.pair.status import PairView
from balancer.state import Counters, EngineStatus, Health
from balancer.system import System, SystemFigures

log = logging.getLogger("balancer.history")

INTERVAL = 10.0  # seconds: the finest tier's step
FILE = "history.db"


class Increases:
    """Each counter's increase since its previous read."""

    def __init__(self) -> None:
        self._previous: dict[str, tuple[float, int]] = {}

    def point(self, series: str, at: float, value: int) -> Point | None:
        """The counter's rate and increase, or None on its first read (nothing to compare)."""
        before = self._previous.get(series)
        self._previous[series] = (at, value)
        if before is None or at <= before[0]:
            return None
        # Gone back: the counter restarted from zero since, so all of it is new.
        increase = value - before[1] if value >= before[1] else value
        return Point(series, increase / (at - before[0]), float(increase))


def gauges(figures: SystemFigures, pair: PairView | None) -> list[Point]:
    found = []
    if figures.load is not None:
        found.append(Point("node/load", figures.load.one))  # the name of the 1 min one, kept
        found.append(Point("node/load5", figures.load.five))
        found.append(Point("node/load15", figures.load.fifteen))
    if figures.memory is not None:
        found.append(Point("node/memory_used", float(figures.memory.used)))
    if pair is not None:
        found.append(Point("ha/active", 1.0 if pair.this.state == "active" else 0.0))
    return found


def counters(figures: SystemFigures, status: EngineStatus | None) -> list[tuple[str, int]]:
    """Every counter of the sample, by series."""
    found = []
    for nic in figures.interfaces:
        found += [(f"interface/{nic.name}/rx_bytes", nic.rx_bytes)]
        found += [(f"interface/{nic.name}/tx_bytes", nic.tx_bytes)]
    for name, c in _counted(status):
        found += [
            (f"{name}/new_connections", c.total),
            (f"{name}/bytes_in", c.bytes_in),
            (f"{name}/bytes_out", c.bytes_out),
        ]
    return found


def engine_gauges(status: EngineStatus | None) -> list[Point]:
    found = [Point(f"{name}/connections", float(c.active)) for name, c in _counted(status)]
    for vs in () if status is None else status.virtual_services:
        up = [rs.health == Health.UP for rs in vs.real_servers]
        found.append(Point(f"service/{vs.label}/health", 1.0 if any(up) else 0.0))
        for rs, is_up in zip(vs.real_servers, up, strict=True):
            found.append(Point(f"server/{vs.label}/{rs.label}/health", 1.0 if is_up else 0.0))
            if rs.check_seconds is not None:
                found.append(Point(f"server/{vs.label}/{rs.label}/check_seconds", rs.check_seconds))
    return found


class Changes:
    """Each real server's health changes, as ``Change`` rows: told by the event stream, or seen
    in the engine's status when not told. A change of reason while up is no news (as for the
    event stream: "not checked yet", then "connected")."""

    def __init__(self, last: dict[str, tuple[str, str]] | None = None) -> None:
        self._last = dict(last or {})  # "VS/RS": (health, reason)

    def seen(
        self, told: list[events.Event | events.Missed], status: EngineStatus | None, at: float
    ) -> list[Change]:
        found = []
        for event in told:
            if isinstance(event, events.HealthChanged):
                found += self._note(
                    f"{event.service}/{event.server}", event.health, event.reason, event.at
                )
        for vs in () if status is None else status.virtual_services:
            for rs in vs.real_servers:
                found += self._note(f"{vs.label}/{rs.label}", rs.health.value, rs.reason, at)
        return found

    def _note(self, server: str, health: str, reason: str, at: float) -> list[Change]:
        was = self._last.get(server)
        if was is not None and was[0] == health and (health == "up" or was[1] == reason):
            return []
        self._last[server] = (health, reason)
        return [Change(int(at), server, health, reason)]


def _counted(status: EngineStatus | None) -> list[tuple[str, Counters]]:
    found = []
    for vs in () if status is None else status.virtual_services:
        found.append((f"service/{vs.label}", vs.counters))
        found += [(f"server/{vs.label}/{rs.label}", rs.counters) for rs in vs.real_servers]
    return found


class Sampler:
    def __init__(
        self,
        history: History,
        status: Callable[[], Awaitable[EngineStatus]],
        figures: Callable[[], SystemFigures],
        pair: Callable[[], PairView | None],
        *,
        told: Callable[[], list[events.Event | events.Missed]] = list,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``told``: the events published since it was last called (a subscription's
        ``pending``)."""
        self.history = history
        self._status = status
        self._figures = figures
        self._pair = pair
        self._told = told
        self._clock = clock
        self._increases = Increases()
        self._changes = Changes(history.last_changes())
        self._failing = False

    async def tick(self) -> list[Point]:
        """Read and write one sample; what was written."""
        at = self._clock()
        status = await self._engine()
        figures = self._figures()
        points = gauges(figures, self._pair()) + engine_gauges(status)
        for series, value in counters(figures, status):
            point = self._increases.point(series, at, value)
            if point is not None:
                points.append(point)
        changes = self._changes.seen(self._told(), status, at)
        write = asyncio.ensure_future(
            asyncio.to_thread(self.history.write, int(at), points, changes)
        )
        try:
            await asyncio.shield(write)
        except asyncio.CancelledError:
            await write  # its transaction ends before the daemon closes the file
            raise
        return points

    async def _engine(self) -> EngineStatus | None:
        try:
            status = await self._status()
        except Exception as error:
            if not self._failing:
                log.warning("history: the engine's counters cannot be read (%s)", error)
            self._failing = True
            return None
        self._failing = False
        return status

    async def run(self, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        """A sample every INTERVAL, on the multiples of it, until cancelled."""
        while True:
            try:
                await self.tick()
            except Exception as error:  # a full disk, say: the next tick tries again
                log.warning("history: a sample could not be written (%s)", error)
            await sleep(INTERVAL - self._clock() % INTERVAL)


async def sample(
    data_dir: Path,
    status: Callable[[], Awaitable[EngineStatus]],
    pair: Callable[[], PairView | None],
    told: events.Subscription | None = None,
) -> None:
    """The daemon's task: sample into data_dir/history.db until cancelled. A file that cannot
    be opened (a full disk, a damaged file) means no history, not a daemon that stops.
    ``told``: the event stream, left when the task ends."""
    with told or contextlib.nullcontext():
        try:
            history = History(data_dir / FILE)
        except (sqlite3.Error, OSError) as error:
            log.error("history: not kept: %s cannot be opened (%s)", data_dir / FILE, error)
            return
        with history:
            pending = list if told is None else told.pending
            await Sampler(history, status, System().figures, pair, told=pending).run()
