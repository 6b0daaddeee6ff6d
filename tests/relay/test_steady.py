"""Ordinary traffic over time: changes of server state while connections carry bytes, and a
bounded soak after which the relay holds the descriptors and the memory it held before."""

from __future__ import annotations

import asyncio
import itertools

from balancer.engines import Engine
from tests.backends import Addresses, EchoServer, free_port, pattern
from tests.engine import (
    IO_TIMEOUT,
    Client,
    Revisions,
    landing,
    real_server,
    server_status,
    virtual_service,
    wait_for,
)
from tests.engine.test_flow import rss

from . import MIB, linger_zero, open_fds, quiet, relay_pid

HELD = 6  # established connections, two on each server


async def talk(client: Client, stop: asyncio.Event) -> int:
    """Round trips of 64 KiB until ``stop``; how many were made."""
    count = 0
    while not stop.is_set() and count < 2000:
        await client.roundtrip(pattern(64 * 1024, seed=count))
        count += 1
    return count


async def test_drain_weight_and_halt_keep_established_connections_relaying(
    engine: Engine, revisions: Revisions, net: Addresses
) -> None:
    """While every held connection streams round trips, A is drained, B weighted, C halted:
    not one byte of a held connection is lost, and new clients go to B only."""
    async with (
        EchoServer("A", net.ip()) as a,
        EchoServer("B", net.ip()) as b,
        EchoServer("C", net.ip()) as c,
    ):
        vip = (net.ip(), free_port(net.ip()))
        servers = [real_server(s.name, s.address) for s in (a, b, c)]
        await revisions.apply(virtual_service("steady", vip, servers))
        held = [await Client.open(vip) for _ in range(HELD)]
        stop = asyncio.Event()
        talkers = [asyncio.create_task(talk(client, stop)) for client in held]
        try:
            assert sorted(client.name for client in held) == ["A", "A", "B", "B", "C", "C"]
            for label, change in (("A", {"state": "drain"}), ("B", {"weight": 50}),
                                  ("C", {"state": "halt"})):  # fmt: skip
                service = revisions.service("steady")
                index = "ABC".index(label)
                service["real_servers"][index].update(change)
                await revisions.apply(service)
                await asyncio.sleep(0.2)  # bytes flow between the changes
                assert not any(t.done() for t in talkers), "a held connection broke"
            shown = server_status(await engine.status(), "steady", "C")
            assert shown.counters.active == 2, "the halted server's connections are held"
            assert {await landing(vip) for _ in range(4)} == {"B"}
        finally:
            stop.set()
            await asyncio.wait(talkers, timeout=IO_TIMEOUT)
        counts = [talker.result() for talker in talkers]
        assert all(counts), f"round trips per held connection: {counts}"
        for client in held:
            await client.roundtrip(b"after the three changes\n")
            assert await client.finish() == b""
        await quiet(engine, "steady")


SOAK_ROUNDS = 5
SOAK_CONNECTIONS = 300  # each round
SOAK_AT_ONCE = 100
SOAK_BYTES = 64 * 1024  # each connection, each way
# What a round may add to the relay's memory once the first has warmed it up: far less than
# a leak of one buffer per connection (a round is 300 connections of 64 KiB).
RSS_SLACK = 4 * MIB


async def test_descriptors_and_memory_stay_flat_over_a_soak(
    engine: Engine, revisions: Revisions, net: Addresses
) -> None:
    """Rounds of connections that relay 64 KiB each way and then close or reset: after the
    first round, the relay's descriptors are back where they were and its memory stays."""
    async with EchoServer("A", net.ip()) as a, EchoServer("B", net.ip()) as b:
        vip = (net.ip(), free_port(net.ip()))
        servers = [real_server("A", a.address), real_server("B", b.address)]
        await revisions.apply(virtual_service("soak", vip, servers))
        pid = await relay_pid(engine)
        sources = itertools.cycle([net.ip() for _ in range(4)])
        slots = asyncio.Semaphore(SOAK_AT_ONCE)
        failures: list[str] = []
        payload = pattern(SOAK_BYTES, seed=3)

        async def one(index: int, source: str) -> None:
            try:
                async with slots:
                    client = await Client.open(vip, source)
                    await client.roundtrip(payload)
                    if index % 3 == 0:
                        linger_zero(client.writer.get_extra_info("socket"))
                        client.writer.transport.abort()
                    else:
                        assert await client.finish() == b""
            except (OSError, TimeoutError, AssertionError, asyncio.IncompleteReadError) as error:
                failures.append(f"{index}: {type(error).__name__}: {error}")

        async def round_() -> tuple[int, int]:
            await asyncio.gather(*(one(i, next(sources)) for i in range(SOAK_CONNECTIONS)))
            assert failures == []
            await quiet(engine, "soak")
            await wait_for(lambda: a.active + b.active == 0, what="every server side closed")
            return open_fds(pid), rss(pid)

        fds, memory = await round_()  # what the first connections set up once is not a leak
        for _ in range(SOAK_ROUNDS - 1):
            found_fds, found_memory = await round_()
            # The control connection that asked for the status may still be closing.
            assert found_fds <= fds + 2, f"{found_fds - fds} descriptors more after a round"
        grown = found_memory - memory
        assert grown < RSS_SLACK, f"{grown / MIB:.1f} MiB more after {SOAK_ROUNDS - 1} rounds"
