"""Source-IP persistence: a returning client gets the real server it had."""

from __future__ import annotations

import asyncio
import itertools
import ssl
from collections import Counter

from balancer.engines import Engine
from tests.backends import Addresses, EchoServer, free_port

from . import (
    Client,
    Revisions,
    https_check,
    landing,
    psm_servers,
    real_server,
    server_status,
    virtual_service,
    wait_for,
    wait_for_health,
)

SOURCE_IP = {"mode": "source_ip", "timeout": 600}


async def test_a_returning_client_gets_the_same_server(engine: Engine, net: Addresses) -> None:
    async with EchoServer("A", net.ip()) as a, EchoServer("B", net.ip()) as b:
        vip = (net.ip(), free_port(net.ip()))
        servers = [real_server("A", a.address), real_server("B", b.address)]
        await Revisions(engine).apply(virtual_service("rdp", vip, servers, persistence=SOURCE_IP))
        sources = [net.ip() for _ in range(4)]
        first = {source: await landing(vip, source) for source in sources}
        assert set(first.values()) == {"A", "B"}, f"new clients are balanced: {first}"

        for source in sources:
            # Reconnecting in a row: without persistence round robin would alternate.
            again = [await landing(vip, source) for _ in range(5)]
            assert again == [first[source]] * 5, source


async def test_without_persistence_a_returning_client_alternates(
    engine: Engine, net: Addresses
) -> None:
    async with EchoServer("A", net.ip()) as a, EchoServer("B", net.ip()) as b:
        vip = (net.ip(), free_port(net.ip()))
        servers = [real_server("A", a.address), real_server("B", b.address)]
        await Revisions(engine).apply(virtual_service("rdp", vip, servers))
        source = net.ip()

        names = [await landing(vip, source) for _ in range(6)]

        assert Counter(names) == {"A": 3, "B": 3}
        assert all(x != y for x, y in itertools.pairwise(names)), names


async def test_persistence_survives_a_commit(engine: Engine, net: Addresses) -> None:
    async with EchoServer("A", net.ip()) as a, EchoServer("B", net.ip()) as b:
        vip = (net.ip(), free_port(net.ip()))
        servers = [real_server("A", a.address), real_server("B", b.address)]
        revisions = Revisions(engine)
        await revisions.apply(virtual_service("rdp", vip, servers, persistence=SOURCE_IP))
        sources = [net.ip() for _ in range(4)]
        first = {source: await landing(vip, source) for source in sources}
        assert set(first.values()) == {"A", "B"}

        # An unrelated change: another virtual service, and this one's timeouts.
        rdp = revisions.service("rdp") | {"client_timeout": 3600, "connect_timeout": 2}
        other = virtual_service("other", (vip[0], free_port(vip[0])), servers)
        await revisions.apply(rdp, other)
        assert (await engine.status()).revision == 2

        # Those on A first, then those on B: whatever its state, round robin alone would not
        # send two clients in a row to the same server.
        for source in sorted(sources, key=first.__getitem__):
            again = [await landing(vip, source) for _ in range(3)]
            assert again == [first[source]] * 3, source


async def test_a_session_longer_than_the_timeout_keeps_its_client(
    engine: Engine, net: Addresses
) -> None:
    """The timeout counts from when a client's last connection ends, so an RDP session that
    outlasts it still brings a reconnecting user back to the same PSM server."""
    async with EchoServer("A", net.ip()) as a, EchoServer("B", net.ip()) as b:
        vip = (net.ip(), free_port(net.ip()))
        servers = [real_server("A", a.address), real_server("B", b.address)]
        short = {"mode": "source_ip", "timeout": 1}
        await Revisions(engine).apply(virtual_service("rdp", vip, servers, persistence=short))
        source = net.ip()
        session = await Client.open(vip, source)
        try:
            for _ in range(12):  # three times the timeout, talking all along
                await session.roundtrip(b"typing\n")
                await asyncio.sleep(0.25)
            again = [await landing(vip, source) for _ in range(4)]
            assert again == [session.name] * 4
        finally:
            await session.close()


async def test_a_failed_over_client_stays_on_its_new_server(
    engine: Engine, net: Addresses, tls: ssl.SSLContext
) -> None:
    """A client whose server fails moves to another; when its old connection to the failed
    server ends, and that server recovers, the client stays where it moved."""
    async with psm_servers(net, tls, "A", "B") as (psms, health_port):
        vip = (net.ip(), free_port(net.ip()))
        servers = [real_server(p.service.name, p.service.address) for p in psms]
        check = https_check(health_port)
        await Revisions(engine).apply(
            virtual_service("rdp", vip, servers, persistence=SOURCE_IP, health_check=check)
        )
        source = net.ip()
        held = await Client.open(vip, source)
        try:
            failed, other = sorted(psms, key=lambda p: p.service.name != held.name)
            failed.health.answer = "FAIL"
            await wait_for_health(engine, "rdp", failed.service.name, "down", timeout=5)
            assert await landing(vip, source) == other.service.name, "the client moves"

            await held.close()

            async def ended() -> bool:
                status = await engine.status()
                return server_status(status, "rdp", failed.service.name).counters.active == 0

            await wait_for(ended, what="the engine has seen the held connection end")
            failed.health.answer = "PASS"
            await wait_for_health(engine, "rdp", failed.service.name, "up", timeout=5)

            again = [await landing(vip, source) for _ in range(4)]
            assert again == [other.service.name] * 4
            [entry] = await engine.persistence("rdp")
            assert (entry["client"], entry["server"]) == (source, other.service.name)
        finally:
            await held.close()
