"""The compiled relay core (balancer._relay) relaying for the built-in engine: chosen by
BALANCER_RELAY, said in the status, bytes both ways and counted, the round robin's order by
weight, states and health written into its tables, persistence left to the Python relay, and
a choice that cannot be run refused at the engine's start. The behaviour every relay shares is
tests/relay/'s; this is what belongs to the core alone."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import socket
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from balancer.engines import EngineError
from balancer.engines.builtin import BuiltinEngine, core
from balancer.engines.builtin.process import paths as builtin_paths
from balancer.engines.builtin.service import RunningServer
from balancer.model import RealServer
from tests.backends import Addresses, EchoServer, free_port
from tests.engine import (
    Client,
    Revisions,
    landing,
    real_server,
    server_status,
    service_status,
    settled,
    virtual_service,
)
from tests.engine.conftest import ATTACH_TIMEOUT, STOP_TIMEOUT, net
from tests.relay.conftest import core_missing

__all__ = ["net"]


pytestmark = pytest.mark.skipif(core_missing() is not None, reason=str(core_missing()))


@contextlib.contextmanager
def chosen(relay: str) -> Iterator[None]:
    """BALANCER_RELAY=``relay`` for the engine process started meanwhile."""
    before = os.environ.get(core.ENVIRONMENT)
    os.environ[core.ENVIRONMENT] = relay
    try:
        yield
    finally:
        if before is None:
            del os.environ[core.ENVIRONMENT]
        else:
            os.environ[core.ENVIRONMENT] = before


def relay_said(data_dir: Path) -> list[str]:
    """What the engine's log said about its relay."""
    lines = (data_dir / "logs" / "engine.log").read_text().splitlines()
    messages = [str(json.loads(line).get("message", "")) for line in lines]
    return [message for message in messages if message.startswith("relay: ")]


@pytest.fixture(scope="module")
def runner() -> Iterator[asyncio.Runner]:
    with asyncio.Runner() as runner:
        yield runner


@pytest.fixture(scope="module")
def engine(
    runner: asyncio.Runner, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BuiltinEngine]:
    """One engine on the compiled core for the module; each test applies its own services."""
    data_dir = tmp_path_factory.mktemp("core")
    engine = BuiltinEngine(data_dir)
    try:
        with chosen("core"):
            runner.run(asyncio.wait_for(engine.attach(), ATTACH_TIMEOUT))
        yield engine
    finally:
        runner.run(asyncio.wait_for(engine.stop(), STOP_TIMEOUT))


@pytest.fixture
def revisions(engine: BuiltinEngine) -> Revisions:
    return Revisions(engine)


def test_the_round_robin_order_is_the_python_schedulers() -> None:
    """The order the core walks is what balancing.RoundRobin picks: weights 5, 1, 1 give
    a, a, b, a, c, a, a; weight 0 is left out."""
    servers = [
        RunningServer(RealServer(label=label, ip="127.0.0.1", port=1, weight=weight))
        for label, weight in (("a", 5), ("b", 1), ("c", 1), ("d", 0))
    ]
    assert core.order(servers) == (0, 0, 1, 0, 2, 0, 0)


def test_the_engine_says_it_runs_the_core_and_relays_both_ways(
    runner: asyncio.Runner, engine: BuiltinEngine, revisions: Revisions, net: Addresses
) -> None:
    """The log and the status say so; bytes go both ways, counted for service and server."""

    async def body() -> None:
        assert relay_said(engine.data_dir) == ["relay: compiled core"]
        assert (await engine.status()).relay == "compiled core"
        async with EchoServer("A", net.ip()) as backend:
            vip = (net.ip(), free_port(net.ip()))
            await revisions.apply(virtual_service("web", vip, [real_server("A", backend.address)]))
            client = await Client.open(vip)
            try:
                await client.roundtrip(b"x" * 100_000)
                status = await engine.status()
                assert service_status(status, "web").counters.active == 1
            finally:
                await client.close()

            async def counted() -> tuple[int, int, int]:
                counters = server_status(await engine.status(), "web", "A").counters
                return counters.active, counters.total, counters.bytes_in

            # The greeting (6 bytes) and the round trip's, each way.
            assert await settled(counted, (0, 1, 100_006)) == (0, 1, 100_006)

    runner.run(body())


def test_the_loop_thread_runs_before_the_python_thread_where_they_share_a_core(
    engine: BuiltinEngine,
) -> None:
    """As root (as the suite and the appliance run) the core's loop thread runs ten nice
    values below the engine's Python thread, which keeps the one it was started with (this
    process's); without the privilege both keep it."""
    pid = int(builtin_paths(engine.data_dir)[1].read_text())
    nice = {
        int(task.name): int((task / "stat").read_text().rpartition(")")[2].split()[16])
        for task in Path(f"/proc/{pid}/task").iterdir()
    }
    started = os.getpriority(os.PRIO_PROCESS, 0)
    assert nice[pid] == started
    loop = started if os.geteuid() else max(-20, started - 10)
    assert loop in [value for task, value in nice.items() if task != pid], nice


def test_round_robin_by_weight_and_the_states_python_writes(
    runner: asyncio.Runner, engine: BuiltinEngine, revisions: Revisions, net: Addresses
) -> None:
    """Weights 2 and 1 share six clients 4 and 2; a drained server then gets no new client,
    while the connection it holds goes on."""

    async def body() -> None:
        async with EchoServer("A", net.ip()) as a, EchoServer("B", net.ip()) as b:
            vip = (net.ip(), free_port(net.ip()))
            servers = [real_server("A", a.address, weight=2), real_server("B", b.address, weight=1)]
            await revisions.apply(virtual_service("rr", vip, servers))
            assert Counter([await landing(vip) for _ in range(6)]) == {"A": 4, "B": 2}
            held = await Client.open(vip)
            try:
                drained = revisions.service("rr")
                index = ["A", "B"].index(held.name)
                drained["real_servers"][index]["state"] = "drain"
                await revisions.apply(drained)
                other = "B" if held.name == "A" else "A"
                assert {await landing(vip) for _ in range(4)} == {other}
                await held.roundtrip(b"still relayed after the drain")
            finally:
                await held.close()

    runner.run(body())


def test_persistence_in_the_core_mirrored_in_the_table_python_lists(
    runner: asyncio.Runner, engine: BuiltinEngine, revisions: Revisions, net: Addresses
) -> None:
    """A client comes back to its server; the persistence list (Python's table, fed by the
    core's reports) shows it; a drained server keeps its stuck client but takes no new one;
    the operator's clear empties the core's table too, so the client is balanced afresh."""

    async def body() -> None:
        async with EchoServer("A", net.ip()) as a, EchoServer("B", net.ip()) as b:
            vip = (net.ip(), free_port(net.ip()))
            servers = [real_server("A", a.address), real_server("B", b.address)]
            sticky = {"mode": "source_ip", "timeout": 600}
            await revisions.apply(virtual_service("sticky", vip, servers, persistence=sticky))
            client, other = net.ip(), net.ip()
            first = await landing(vip, client)
            assert {await landing(vip, client) for _ in range(4)} == {first}

            async def listed() -> list[tuple[str, str]]:
                entries = await engine.persistence("sticky")
                return sorted((e["client"], e["server"]) for e in entries)

            assert await settled(listed, [(client, first)]) == [(client, first)]
            drained = revisions.service("sticky")
            drained["real_servers"][["A", "B"].index(first)]["state"] = "drain"
            await revisions.apply(drained)
            rest = "B" if first == "A" else "A"
            assert await landing(vip, client) == first
            assert await landing(vip, other) == rest
            assert await engine.clear_persistence("sticky") == 2
            assert await landing(vip, client) == rest

    runner.run(body())


def test_the_cores_persistence_table_is_as_big_as_pythons(
    runner: asyncio.Runner, engine: BuiltinEngine, revisions: Revisions, net: Addresses
) -> None:
    """A flood of distinct clients leaves the core's table at the service's table_size, its
    least recently used let go, and Python's listing the same entries: with A drained, a
    client the core still has on A comes back to A, one it let go is balanced to B."""

    async def body() -> None:
        async with EchoServer("A", net.ip()) as a, EchoServer("B", net.ip()) as b:
            vip = (net.ip(), free_port(net.ip()))
            servers = [real_server("A", a.address), real_server("B", b.address)]
            sticky = {"mode": "source_ip", "timeout": 600, "table_size": 3}
            await revisions.apply(virtual_service("flood", vip, servers, persistence=sticky))
            clients = [net.ip() for _ in range(12)]
            landed = {client: await landing(vip, client) for client in clients}
            kept, gone = clients[-3:], clients[:-3]

            async def listed() -> list[tuple[str, str]]:
                entries = await engine.persistence("flood")
                return sorted((e["client"], e["server"]) for e in entries)

            expected = sorted((client, landed[client]) for client in kept)
            assert await settled(listed, expected) == expected
            on_a = [client for client in kept if landed[client] == "A"]
            forgotten = next(client for client in gone if landed[client] == "A")
            assert on_a, "the round robin put none of the last three clients on A"
            drained = revisions.service("flood")
            drained["real_servers"][0]["state"] = "drain"
            await revisions.apply(drained)
            assert [await landing(vip, client) for client in on_a] == ["A"] * len(on_a)
            assert await landing(vip, forgotten) == "B"
            assert len(await listed()) == 3

    runner.run(body())


def test_a_relay_that_cannot_be_run_is_refused_at_the_start(
    runner: asyncio.Runner,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """No silent fallback: BALANCER_RELAY naming no relay stops the engine, saying why."""

    async def body() -> None:
        engine = BuiltinEngine(tmp_path_factory.mktemp("bogus"))
        with (
            chosen("turbo"),
            pytest.raises(EngineError, match="BALANCER_RELAY: 'turbo' is neither"),
        ):
            await asyncio.wait_for(engine.attach(), ATTACH_TIMEOUT)
        with contextlib.suppress(EngineError):
            await engine.stop()

    runner.run(body())


def test_expiry_drops_the_entries_unused_that_long_and_stops_at_the_first_used_since() -> None:
    """The core's expiry walks its table oldest first and stops at the first entry used within
    the timeout: learned with ages 50, 40, 30, 5 and 1 s, a 20 s timeout drops three, twice
    asked still three in all, a 2 s one the 5 s old one, and one is left."""
    relay = importlib.import_module("balancer._relay")
    handle = relay.core()
    service = relay.service(1)
    server = relay.server(2, socket.AF_INET, socket.inet_pton(socket.AF_INET, "127.0.0.1"), 80)
    relay.set_table(handle, service, (server,), (0,), False, None, 0, 1000, 1000, 600_000, 0)
    for last, age in enumerate((50_000, 40_000, 30_000, 5_000, 1_000), start=1):
        relay.learn(handle, service, bytes((127, 0, 0, last)), server, age)
    assert relay.expire(handle, service, 20_000) == 3
    assert relay.expire(handle, service, 20_000) == 0
    assert relay.expire(handle, service, 2_000) == 1
    assert relay.forget(handle, service, 0) == 1  # what was left


def test_a_peers_entry_that_fills_the_table_says_which_entry_made_room() -> None:
    """A table of two that learns a third client from the peer lets its least recently used
    go and reports it (EVICT), so that Python's table never lists a client the core dropped."""
    relay = importlib.import_module("balancer._relay")
    handle = relay.core()
    service = relay.service(1)
    server = relay.server(2, socket.AF_INET, socket.inet_pton(socket.AF_INET, "127.0.0.1"), 80)
    relay.set_table(handle, service, (server,), (0,), False, None, 0, 1000, 1000, 600_000, 2)
    for last, age in enumerate((3_000, 2_000, 1_000), start=1):
        relay.learn(handle, service, bytes((127, 0, 0, last)), server, age)
    events, lost = relay.events(handle)
    assert [(kind, client) for kind, _, _, _, client, _ in events] == [(relay.EVICT, "127.0.0.1")]
    assert lost == 0
    assert relay.forget(handle, service, 0) == 2  # the two newest were kept
