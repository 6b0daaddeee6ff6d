"""Which real server a new client gets: round robin, least connections, redispatch."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest

from balancer.engines import Engine
from tests.backends import Addresses, EchoServer, free_port

from . import Client, Revisions, landing, real_server, service_status, virtual_service, wait_for

SOURCES = [f"127.0.50.{n}" for n in range(1, 21)]


@pytest.mark.parametrize("persistence", ["none", "source_ip"])
async def test_twenty_clients_spread_over_two_servers(
    engine: Engine, net: Addresses, persistence: str
) -> None:
    async with EchoServer("A", net.ip()) as a, EchoServer("B", net.ip()) as b:
        vip = (net.ip(), free_port(net.ip()))
        servers = [real_server("A", a.address), real_server("B", b.address)]
        await Revisions(engine).apply(
            virtual_service("web", vip, servers, persistence={"mode": persistence})
        )

        first = [await landing(vip, source) for source in SOURCES]

        counts = Counter(first)
        assert set(counts) == {"A", "B"}, f"both servers get clients: {first}"
        assert (a.accepted, b.accepted) == (counts["A"], counts["B"])
        if persistence == "none":
            # Equal weights, round robin: exact alternation.
            assert all(x != y for x, y in itertools.pairwise(first)), first
        else:
            assert abs(counts["A"] - counts["B"]) <= 2, f"roughly even: {counts}"
            again = [await landing(vip, source) for source in SOURCES]
            assert again == first, "each client keeps its server"


async def test_least_connections_sends_new_clients_to_the_idler_server(
    engine: Engine, net: Addresses
) -> None:
    async with EchoServer("A", net.ip()) as a, EchoServer("B", net.ip()) as b:
        vip = (net.ip(), free_port(net.ip()))
        servers = [real_server("A", a.address), real_server("B", b.address)]
        await Revisions(engine).apply(
            virtual_service("web", vip, servers, balancing="least_connections")
        )
        clients = [await Client.open(vip) for _ in range(6)]
        try:
            assert Counter(c.name for c in clients) == {"A": 3, "B": 3}
            # Let B's clients go: A keeps three open connections, B has none.
            for client in [c for c in clients if c.name == "B"]:
                clients.remove(client)
                assert await client.finish() == b""

            async def b_is_idle() -> bool:
                status = service_status(await engine.status(), "web")
                active = {rs.label: rs.counters.active for rs in status.real_servers}
                return active == {"A": 3, "B": 0}

            await wait_for(b_is_idle, what="B's connections have ended, A's are open")

            for _ in range(3):
                clients.append(await Client.open(vip))
                assert clients[-1].name == "B", "a new client goes to the server with fewer"
        finally:
            for client in clients:
                await client.close()


async def test_a_server_that_refuses_is_skipped(engine: Engine, net: Addresses) -> None:
    """Redispatch: the health check (none) says the server is up, but its port refuses."""
    refusing = (net.ip(), free_port(net.ip()))
    async with EchoServer("B", net.ip()) as b:
        vip = (net.ip(), free_port(net.ip()))
        servers = [real_server("A", refusing), real_server("B", b.address)]
        await Revisions(engine).apply(virtual_service("web", vip, servers))

        names = [await landing(vip) for _ in range(10)]

        assert names == ["B"] * 10
        assert b.accepted == 10
