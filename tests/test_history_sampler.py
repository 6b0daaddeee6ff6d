"""The history's sampler on the fake engine and a fake /proc, with a fake clock: one sample per
tick, a gap (not a stop) when the engine cannot be read, never a negative rate, each real
server's health changes with their reasons."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from balancer import events
from balancer.history.sampler import FILE, Increases, Sampler, sample
from balancer.history.store import History, Point, connect
from balancer.state import Counters, EngineStatus
from balancer.system import System
from tests.test_plan import config, document
from tests.webapp import Clock, FakeEngine

NET_DEV = """Inter-|   Receive  |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets ...
  eth0: {rx} 10 0 0 0 0 0 0 {tx} 10 0 0 0 0 0 0
"""
MEMINFO = "MemTotal: 1000 kB\nMemFree: 400 kB\nMemAvailable: 600 kB\n"


class Counted(FakeEngine):
    """The fake engine, whose first real server has carried ``total`` connections and whose
    last check took ``took`` seconds."""

    total = 0
    took: float | None = None

    async def status(self) -> EngineStatus:
        status = await super().status()
        vs = status.virtual_services[0]
        first = vs.real_servers[0].model_copy(
            update={"counters": Counters(total=self.total), "check_seconds": self.took}
        )
        vs = vs.model_copy(update={"real_servers": (first, *vs.real_servers[1:])})
        return status.model_copy(update={"virtual_services": (vs, *status.virtual_services[1:])})


def proc(root: Path, rx: int, tx: int) -> Path:
    (root / "net").mkdir(parents=True, exist_ok=True)
    (root / "net" / "dev").write_text(NET_DEV.format(rx=rx, tx=tx))
    (root / "meminfo").write_text(MEMINFO)
    return root


def sampler(
    tmp_path: Path,
    engine: FakeEngine,
    clock: Clock,
    told: list[events.Event | events.Missed] | None = None,
) -> Sampler:
    """``told``: the events the next tick is told of (emptied by it, as a subscription is)."""
    system = System(proc(tmp_path / "proc", 1000, 2000), load=lambda: (0.5, 0.25, 0.125))
    history = History(tmp_path / "history.db")

    def pending() -> list[events.Event | events.Missed]:
        found = list(told or [])
        if told is not None:
            told.clear()
        return found

    return Sampler(history, engine.status, system.figures, lambda: None, told=pending, clock=clock)


def written(tmp_path: Path, series: str) -> list[tuple[int, float, float | None]]:
    db = connect(tmp_path / "history.db", readonly=True)
    return db.execute(
        "SELECT t, avg, total FROM points JOIN series s ON s.id = series"
        " WHERE tier = 0 AND s.name = ? ORDER BY t",
        (series,),
    ).fetchall()


def test_each_tick_writes_one_sample_of_the_engine_and_the_node(tmp_path: Path) -> None:
    engine, clock = Counted(), Clock()
    engine.config = config(document())
    taken = sampler(tmp_path, engine, clock)
    for took in (0.004, None, 0.25):
        engine.total += 50
        engine.took = took
        asyncio.run(taken.tick())
        clock.now += 10
    taken.history.close()
    assert written(tmp_path, "server/CyberArk-PSM/PSM1/health") == [
        (1000, 1.0, None),
        (1010, 1.0, None),
        (1020, 1.0, None),
    ]
    assert written(tmp_path, "node/load") == [(t, 0.5, None) for t in (1000, 1010, 1020)]
    assert written(tmp_path, "node/load5")[0] == (1000, 0.25, None)
    assert written(tmp_path, "node/load15")[0] == (1000, 0.125, None)
    # The health check's latency, where the engine said it (not before a first check).
    assert written(tmp_path, "server/CyberArk-PSM/PSM1/check_seconds") == [
        (1000, 0.004, None),
        (1020, 0.25, None),
    ]
    assert written(tmp_path, "node/memory_used")[0] == (1000, 400 * 1024.0, None)
    # A counter has a point from its second read on: 50 connections in 10 s.
    assert written(tmp_path, "server/CyberArk-PSM/PSM1/new_connections") == [
        (1010, 5.0, 50.0),
        (1020, 5.0, 50.0),
    ]
    assert len(written(tmp_path, "service/CyberArk-PSM-Web/connections")) == 3


def changes_kept(tmp_path: Path) -> list[tuple[int, str, str, str]]:
    db = connect(tmp_path / "history.db", readonly=True)
    return db.execute("SELECT t, server, health, reason FROM changes ORDER BY rowid").fetchall()


def test_health_changes_are_kept_with_their_reason_told_or_seen(tmp_path: Path) -> None:
    engine, clock, told = FakeEngine(), Clock(), []
    engine.config = config(document())
    engine.failed = {"CyberArk-PSM/PSM2": "connect refused"}
    taken = sampler(tmp_path, engine, clock, told)
    asyncio.run(taken.tick())  # the first: every server as it is, PSM2 down and why
    first = changes_kept(tmp_path)
    assert (1000, "CyberArk-PSM/PSM2", "down", "connect refused") in first
    assert (1000, "CyberArk-PSM/PSM1", "up", "expected PASS, got PASS") in first
    # Told at the moment it happened, between two ticks; a flap the samples never saw too.
    told += [
        events.HealthChanged("CyberArk-PSM", "PSM2", "up", "connected", 1003.5),
        events.HealthChanged("CyberArk-PSM", "PSM1", "down", "connect timeout after 5s", 1004.0),
        events.HealthChanged("CyberArk-PSM", "PSM1", "up", "connected", 1006.0),
        events.HealthChanged("CyberArk-PSM", "PSM2", "down", "HTTP 503", 1008.0),
    ]
    engine.failed = {"CyberArk-PSM/PSM2": "HTTP 503"}
    clock.now += 10
    asyncio.run(taken.tick())
    # Seen, not told (events missed): the status says PSM2's new reason.
    engine.failed = {"CyberArk-PSM/PSM2": "connect refused"}
    clock.now += 10
    asyncio.run(taken.tick())
    clock.now += 10
    asyncio.run(taken.tick())  # nothing changed: nothing kept
    taken.history.close()
    assert changes_kept(tmp_path)[len(first) :] == [
        (1003, "CyberArk-PSM/PSM2", "up", "connected"),
        (1004, "CyberArk-PSM/PSM1", "down", "connect timeout after 5s"),
        (1006, "CyberArk-PSM/PSM1", "up", "connected"),
        (1008, "CyberArk-PSM/PSM2", "down", "HTTP 503"),
        (1020, "CyberArk-PSM/PSM2", "down", "connect refused"),
    ]
    # A sampler started again goes on from the last kept: no second row for each server.
    with History(tmp_path / "history.db") as history:
        assert history.last_changes()["CyberArk-PSM/PSM2"] == ("down", "connect refused")
    again = sampler(tmp_path, engine, clock)
    asyncio.run(again.tick())
    again.history.close()
    assert len(changes_kept(tmp_path)) == len(first) + 5


def test_an_engine_error_leaves_a_gap_and_the_sampler_goes_on(tmp_path: Path) -> None:
    engine, clock = FakeEngine(), Clock()
    engine.config = config(document())
    taken = sampler(tmp_path, engine, clock)
    for unreachable in (None, "the engine's socket is gone", None):
        engine.unreachable = unreachable
        asyncio.run(taken.tick())
        clock.now += 10
    taken.history.close()
    assert [t for t, *_ in written(tmp_path, "service/CyberArk-PSM/health")] == [1000, 1020]
    assert [t for t, *_ in written(tmp_path, "node/load")] == [1000, 1010, 1020]


def test_a_counter_that_goes_back_counts_from_zero_again() -> None:
    increases = Increases()
    assert increases.point("s", 0.0, 1000) is None
    assert increases.point("s", 10.0, 1500) == Point("s", 50.0, 500.0)
    # The engine restarted: 30 since, not -1470.
    assert increases.point("s", 20.0, 30) == Point("s", 3.0, 30.0)
    assert increases.point("s", 30.0, 30) == Point("s", 0.0, 0.0)


def test_an_interface_whose_counters_reset_has_no_negative_rate(tmp_path: Path) -> None:
    engine, clock = FakeEngine(), Clock()
    taken = sampler(tmp_path, engine, clock)
    for rx, tx in ((1000, 2000), (6000, 2000), (100, 50)):
        proc(tmp_path / "proc", rx, tx)
        asyncio.run(taken.tick())
        clock.now += 10
    taken.history.close()
    received = written(tmp_path, "interface/eth0/rx_bytes")
    assert received == [(1010, 500.0, 5000.0), (1020, 10.0, 100.0)]
    assert written(tmp_path, "interface/eth0/tx_bytes") == [(1010, 0.0, 0.0), (1020, 5.0, 50.0)]


def test_the_sampler_runs_a_tick_per_interval_until_cancelled(tmp_path: Path) -> None:
    engine, clock = FakeEngine(), Clock()
    clock.now = 1003.0  # the first wait ends on the next multiple of 10 s
    taken = sampler(tmp_path, engine, clock)
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 3:
            raise asyncio.CancelledError
        clock.now += seconds

    with contextlib.suppress(asyncio.CancelledError):
        asyncio.run(taken.run(sleep))
    taken.history.close()
    assert waits == [7.0, 10.0, 10.0]
    assert [t for t, *_ in written(tmp_path, "node/load")] == [1003, 1010, 1020]


def test_a_history_file_that_cannot_be_opened_ends_the_task_not_the_daemon(
    tmp_path: Path,
) -> None:
    (tmp_path / FILE).write_bytes(b"not a database, " * 1000)
    asyncio.run(sample(tmp_path, FakeEngine().status, lambda: None))
