"""The built-in engine with two workers: a client always reaches the same worker, so
persistence holds; both workers serve; a worker that dies is started again while the other
serves on; commits and health reach every worker."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from ipaddress import ip_address
from typing import Any

import pytest

from balancer.engines.builtin import BuiltinEngine
from tests.backends import Addresses, EchoServer, free_port

from . import (
    FAST_CHECK,
    IO_TIMEOUT,
    Revisions,
    landing,
    real_server,
    server_status,
    virtual_service,
    wait_for,
    wait_for_health,
)
from .conftest import ATTACH_TIMEOUT, STOP_TIMEOUT

WORKERS = 2
SOURCE_IP = {"mode": "source_ip", "timeout": 600}


@pytest.fixture
def workers(
    runner: asyncio.Runner, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BuiltinEngine]:
    data_dir = tmp_path_factory.mktemp("workers")
    engine = BuiltinEngine(data_dir, workers=WORKERS)
    try:
        runner.run(asyncio.wait_for(engine.attach(), ATTACH_TIMEOUT))
        yield engine
    finally:
        runner.run(asyncio.wait_for(engine.stop(), STOP_TIMEOUT))


def worker_of(source: str) -> int:
    """The worker the kernel gives ``source``: its address modulo the number of workers."""
    return int(ip_address(source)) % WORKERS


async def totals(engine: BuiltinEngine) -> list[int]:
    """Connections each worker has taken, by worker."""
    return [
        sum(vs["counters"]["total"] for vs in worker["status"]["virtual_services"])
        for worker in await engine.worker_status()
    ]


async def test_each_client_keeps_its_worker_and_its_server(
    workers: BuiltinEngine, net: Addresses
) -> None:
    async with EchoServer("A", net.ip()) as a, EchoServer("B", net.ip()) as b:
        vip = (net.ip(), free_port(net.ip()))
        servers = [real_server("A", a.address), real_server("B", b.address)]
        await Revisions(workers).apply(virtual_service("rdp", vip, servers, persistence=SOURCE_IP))
        sources = [net.ip() for _ in range(12)]
        first = {source: await landing(vip, source) for source in sources}
        assert set(first.values()) == {"A", "B"}, f"new clients are balanced: {first}"

        for source in sources:
            again = [await landing(vip, source) for _ in range(3)]
            assert again == [first[source]] * 3, source

        expected = [4 * sum(worker_of(s) == index for s in sources) for index in range(WORKERS)]
        assert await totals(workers) == expected
        assert all(expected), "both workers had clients"
        status = await workers.status()
        assert status.virtual_services[0].counters.total == 4 * len(sources)
        entries = await workers.persistence("rdp")
        assert {entry["client"]: entry["server"] for entry in entries} == first
        assert await workers.clear_persistence("rdp") == len(sources)


async def test_a_killed_worker_is_started_again_and_the_other_serves_on(
    workers: BuiltinEngine, net: Addresses
) -> None:
    async with EchoServer("A", net.ip()) as a:
        vip = (net.ip(), free_port(net.ip()))
        await Revisions(workers).apply(virtual_service("web", vip, [real_server("A", a.address)]))
        sources = [net.ip() for _ in range(2 * WORKERS)]
        killed = [s for s in sources if worker_of(s) == 0]
        others = [s for s in sources if worker_of(s) != 0]
        before = await workers.worker_status()

        os.kill(before[0]["pid"], signal.SIGKILL)
        # The other worker serves on; worker 0's clients wait in its listen queue, which the
        # supervisor keeps open, until worker 0 is back.
        assert [await landing(vip, s) for s in others] == ["A"] * len(others)
        async with asyncio.timeout(IO_TIMEOUT):
            reader, writer = await asyncio.open_connection(*vip, local_addr=(killed[0], 0))
        try:
            writer.write(b"hello\n")

            async def restarted() -> bool:
                now = await workers.worker_status()
                return now[0]["pid"] != before[0]["pid"] and now[0]["status"] is not None

            await wait_for(restarted, what="worker 0 is running again")
            async with asyncio.timeout(IO_TIMEOUT):
                assert await reader.readline() == b"A\n", "the waiting client is served"
        finally:
            writer.close()
        assert [await landing(vip, s) for s in killed] == ["A"] * len(killed)
        after = await workers.worker_status()
        assert after[1]["pid"] == before[1]["pid"]
        assert (await totals(workers))[0] == 1 + len(killed)
        assert (await workers.status()).revision == 1


@pytest.mark.parametrize(
    ("change", "lands"),
    [
        pytest.param({"state": "drain"}, "B", id="drain"),
        pytest.param({"state": "halt"}, "B", id="halt"),
        pytest.param({"weight": 0}, "B", id="weight-0"),
    ],
)
async def test_a_commit_reaches_every_worker(
    workers: BuiltinEngine, net: Addresses, change: dict[str, Any], lands: str
) -> None:
    async with EchoServer("A", net.ip()) as a, EchoServer("B", net.ip()) as b:
        vip = (net.ip(), free_port(net.ip()))
        revisions = Revisions(workers)
        servers = [real_server("A", a.address), real_server("B", b.address)]
        await revisions.apply(virtual_service("web", vip, servers))
        sources = [net.ip() for _ in range(4 * WORKERS)]
        assert {await landing(vip, s) for s in sources} == {"A", "B"}

        service = revisions.service("web")
        service["real_servers"][0].update(change)
        await revisions.apply(service)

        assert [await landing(vip, s) for s in sources] == [lands] * len(sources)
        assert all(await totals(workers))


async def test_health_is_checked_once_and_reaches_every_worker(
    workers: BuiltinEngine, net: Addresses
) -> None:
    async with EchoServer("A", net.ip()) as a, EchoServer("B", net.ip()) as b:
        vip = (net.ip(), free_port(net.ip()))
        servers = [real_server("A", a.address), real_server("B", b.address)]
        check = {"type": "connect", **FAST_CHECK}
        await Revisions(workers).apply(virtual_service("web", vip, servers, health_check=check))
        await wait_for_health(workers, "web", "A", "up")
        await asyncio.sleep(3 * FAST_CHECK["interval"])
        checks = a.accepted
        await asyncio.sleep(10 * FAST_CHECK["interval"])
        # Checked by the supervisor alone: about one check per interval, not one per worker.
        assert a.accepted - checks <= 12

        await a.stop_listening()
        down = await wait_for_health(workers, "web", "A", "down")
        assert down.reason == "connect refused"
        sources = [net.ip() for _ in range(4 * WORKERS)]
        assert [await landing(vip, s) for s in sources] == ["B"] * len(sources)
        assert server_status(await workers.status(), "web", "B").counters.total == len(sources)


async def test_another_number_of_workers_starts_the_engine_afresh(
    workers: BuiltinEngine, net: Addresses
) -> None:
    async with EchoServer("A", net.ip()) as a:
        vip = (net.ip(), free_port(net.ip()))
        await Revisions(workers).apply(virtual_service("web", vip, [real_server("A", a.address)]))
        assert await BuiltinEngine(workers.data_dir, workers=WORKERS).attach() == 1

        single = BuiltinEngine(workers.data_dir, workers=1)
        try:
            assert await single.attach() is None, "a new engine, waiting for the revision"
            assert [w["index"] for w in await single.worker_status()] == [0]
            service = virtual_service("web", vip, [real_server("A", a.address)])
            await Revisions(single).apply(service)
            assert await landing(vip, net.ip()) == "A"
        finally:
            await single.stop()  # the engine it started is its child
