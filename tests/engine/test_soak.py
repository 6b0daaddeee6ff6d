"""Fifty commits under load: a steady stream of new connections and some long-lived ones
through one virtual service, while every commit changes something real. Not one connection may
be refused or reset, and every long-lived connection still relays at the end."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from balancer.engines import Engine
from tests.backends import Addresses, EchoServer, free_port

from . import IO_TIMEOUT, Client, Document, Revisions, real_server, virtual_service

COMMITS = 50
LONG_LIVED = 10
INTERVAL = 0.01  # a new connection every 10 ms...
PER_TICK = 2  # ...two of them
STREAM_LIMIT = 10_000  # connections the stream may open, whatever happens
IN_FLIGHT = 64  # connections of the stream open at once, at most
SOAK_TIMEOUT = 90.0


@dataclass
class Stream:
    """New connections at a steady rate; each says hello, is answered, and closes."""

    vip: tuple[str, int]
    sources: list[str]
    served: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)

    async def run(self, stop: asyncio.Event) -> None:
        slots = asyncio.Semaphore(IN_FLIGHT)
        tasks: set[asyncio.Task[None]] = set()
        sources = itertools.cycle(self.sources)
        for _ in range(STREAM_LIMIT // PER_TICK):
            if stop.is_set():
                break
            for _ in range(PER_TICK):
                await slots.acquire()
                task = asyncio.create_task(self._one(next(sources), slots))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            await asyncio.sleep(INTERVAL)
        if tasks:
            await asyncio.wait(tasks, timeout=2 * IO_TIMEOUT)

    async def _one(self, source: str, slots: asyncio.Semaphore) -> None:
        try:
            client = await Client.open(self.vip, source)
            await client.close()
            self.served[client.name] += 1
        except (OSError, TimeoutError, AssertionError, asyncio.IncompleteReadError) as error:
            self.failures.append(f"{source}: {type(error).__name__}: {error}")
        finally:
            slots.release()


async def talk(client: Client, stop: asyncio.Event) -> int:
    """A long-lived connection that says something every 50 ms until ``stop``."""
    count = 0
    while not stop.is_set() and count < int(SOAK_TIMEOUT / 0.05):
        await client.roundtrip(f"still here {count}\n".encode())
        count += 1
        await asyncio.sleep(0.05)
    return count


def changes(third: Document) -> list[Callable[[Document], object]]:
    """A cycle of real changes: weights, a server coming and going, timeouts, the interval."""
    return [
        lambda vs: vs["real_servers"][0].update(weight=50),
        lambda vs: vs["real_servers"].append(dict(third)),
        lambda vs: vs.update(client_timeout=3600, server_timeout=3600),
        lambda vs: vs["health_check"].update(interval=0.5),
        lambda vs: vs["real_servers"][1].update(weight=20),
        lambda vs: vs["real_servers"].pop(),
        lambda vs: vs.update(connect_timeout=2),
        lambda vs: vs["real_servers"][0].update(weight=100),
        lambda vs: vs["health_check"].update(interval=0.3),
        lambda vs: vs.update(client_timeout=7200, server_timeout=7200, connect_timeout=4),
    ]


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_fifty_commits_under_load_drop_nothing(engine: Engine, net: Addresses) -> None:
    async with (
        EchoServer("A", net.ip()) as a,
        EchoServer("B", net.ip()) as b,
        EchoServer("C", net.ip()) as c,
    ):
        vip = (net.ip(), free_port(net.ip()))
        check = {"type": "connect", "interval": 0.3, "timeout": 1, "rise": 2, "fall": 3}
        revisions = Revisions(engine)
        servers = [real_server("A", a.address), real_server("B", b.address)]
        await revisions.apply(
            virtual_service(
                "soak", vip, servers, health_check=check, persistence={"mode": "source_ip"}
            )
        )
        long_lived = [await Client.open(vip, net.ip()) for _ in range(LONG_LIVED)]
        stream = Stream(vip, [net.ip() for _ in range(8)])
        stop = asyncio.Event()
        talkers = [asyncio.create_task(talk(client, stop)) for client in long_lived]
        flowing = asyncio.create_task(stream.run(stop))
        try:
            async with asyncio.timeout(SOAK_TIMEOUT):
                cycle = itertools.cycle(changes(real_server("C", c.address)))
                for _ in range(COMMITS):
                    service = revisions.service("soak")
                    next(cycle)(service)
                    await revisions.apply(service)
                    await asyncio.sleep(0.1)  # traffic flows between commits
                    assert not any(t.done() for t in talkers), "a long-lived connection broke"
            assert revisions.revision == COMMITS + 1
        finally:
            stop.set()
            await asyncio.wait([flowing, *talkers], timeout=2 * IO_TIMEOUT)
        counts = [talker.result() for talker in talkers]
        assert all(counts), "every long-lived connection relayed during the commits"
        assert stream.failures == [], f"{len(stream.failures)} of the stream failed"
        assert sum(stream.served.values()) >= COMMITS, stream.served
        for client in long_lived:
            await client.roundtrip(b"after the fiftieth commit\n")
        for client in long_lived:
            with contextlib.suppress(ConnectionError):
                await client.close()
