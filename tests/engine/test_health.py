"""Health checks take failing real servers out and bring them back; the fallback server."""

from __future__ import annotations

import ssl

import pytest

from balancer.engines import Engine
from tests.backends import Addresses, EchoServer, free_port

from . import (
    Client,
    Psm,
    Revisions,
    does,
    https_check,
    landing,
    psm_servers,
    real_server,
    refused,
    server_status,
    service_status,
    virtual_service,
    wait_for,
    wait_for_health,
)


async def test_https_check_takes_a_failing_server_out_and_back(
    engine: Engine, net: Addresses, tls: ssl.SSLContext
) -> None:
    async with psm_servers(net, tls, "A", "B") as ((a, b), health_port):
        vip = (net.ip(), free_port(net.ip()))
        servers = [real_server("A", a.service.address), real_server("B", b.service.address)]
        await Revisions(engine).apply(
            virtual_service("rdp", vip, servers, health_check=https_check(health_port))
        )
        await wait_for(
            lambda: a.health.checks >= 2 and b.health.checks >= 2,
            what="both health pages are checked on the check port",
        )
        assert a.service.accepted == b.service.accepted == 0, "the service port is not checked"
        # Each check's latency, as either engine measures it (HAProxy in whole milliseconds: a
        # local check may take 0).
        took = server_status(await engine.status(), "rdp", "B").check_seconds
        assert took is not None
        assert took >= 0
        held = await Client.open(vip)
        try:
            if held.name != "A":
                await held.close()
                held = await Client.open(vip)
            assert held.name == "A"

            a.health.answer = "FAIL"
            down = await wait_for_health(engine, "rdp", "A", "down", timeout=5)
            assert "FAIL" in down.reason, down.reason
            assert server_status(await engine.status(), "rdp", "B").health.value == "up"

            assert [await landing(vip) for _ in range(6)] == ["B"] * 6
            # The connection A already had relays both ways while A is down.
            await held.roundtrip(b"still there\n")
            await held.roundtrip(bytes(range(256)) * 1024)

            a.health.answer = "PASS"
            await wait_for_health(engine, "rdp", "A", "up", timeout=5)
            assert "A" in [await landing(vip) for _ in range(4)]
            await held.roundtrip(b"and after\n")
            assert await held.finish() == b""
        finally:
            await held.close()


@pytest.mark.parametrize("failure", ["health", "refused"])
async def test_fallback_serves_when_every_server_is_down(
    engine: Engine, net: Addresses, tls: ssl.SSLContext, failure: str
) -> None:
    async with (
        psm_servers(net, tls, "A", "B") as ((a, b), health_port),
        EchoServer("fallback", net.ip()) as fallback,
    ):
        vip = (net.ip(), free_port(net.ip()))
        servers = [real_server("A", a.service.address), real_server("B", b.service.address)]
        check = https_check(health_port) if failure == "health" else {"type": "none"}
        fallback_endpoint = {"ip": fallback.host, "port": fallback.port}
        await Revisions(engine).apply(
            virtual_service("rdp", vip, servers, health_check=check, fallback=fallback_endpoint)
        )
        assert {await landing(vip) for _ in range(2)} == {"A", "B"}, "the fallback waits"
        assert fallback.accepted == 0

        await take_down([a, b], failure, engine)
        if failure == "refused" and not does(engine, "fallback_after_refusals"):
            assert await refused(vip), "servers held up refuse: the client is turned away"
            assert fallback.accepted == 0
            return

        client = await Client.open(vip)
        try:
            assert client.name == "fallback"
            status = service_status(await engine.status(), "rdp")
            assert status.fallback_connections == 1
            await client.roundtrip(b"served by the fallback\n")
        finally:
            await client.close()
        assert [await landing(vip) for _ in range(3)] == ["fallback"] * 3

        if failure == "health":
            a.health.answer = "PASS"
            await wait_for_health(engine, "rdp", "A", "up", timeout=5)
        else:
            await a.service.listen()
        assert [await landing(vip) for _ in range(3)] == ["A"] * 3, "the real server is back"


@pytest.mark.parametrize("failure", ["health", "refused"])
async def test_without_fallback_a_new_client_is_turned_away_at_once(
    engine: Engine, net: Addresses, tls: ssl.SSLContext, failure: str
) -> None:
    async with psm_servers(net, tls, "A", "B") as ((a, b), health_port):
        vip = (net.ip(), free_port(net.ip()))
        servers = [real_server("A", a.service.address), real_server("B", b.service.address)]
        check = https_check(health_port) if failure == "health" else {"type": "none"}
        await Revisions(engine).apply(virtual_service("rdp", vip, servers, health_check=check))
        assert not await refused(vip)

        await take_down([a, b], failure, engine)

        for _ in range(3):
            assert await refused(vip), "a client with nobody to serve it is not served"
        assert a.service.accepted + b.service.accepted == 1


async def take_down(servers: list[Psm], failure: str, engine: Engine) -> None:
    """Fail every server: by its health page answering FAIL, or by its port refusing."""
    for psm in servers:
        if failure == "health":
            psm.health.answer = "FAIL"
        else:
            await psm.service.stop_listening()
    if failure == "health":
        for psm in servers:
            await wait_for_health(engine, "rdp", psm.service.name, "down", timeout=5)


async def test_the_recommended_check_also_needs_the_service_port(
    engine: Engine, net: Addresses, tls: ssl.SSLContext
) -> None:
    """CyberArk's recommendation: a server whose health page says PASS while its RDP port
    refuses gets no users, and neither does one whose page says FAIL."""
    async with psm_servers(net, tls, "A", "B") as ((a, b), health_port):
        vip = (net.ip(), free_port(net.ip()))
        servers = [real_server("A", a.service.address), real_server("B", b.service.address)]
        check = https_check(health_port) | {"also_check_service_port": True}
        await Revisions(engine).apply(virtual_service("rdp", vip, servers, health_check=check))
        await wait_for(lambda: a.health.checks >= 2, what="A's health page is checked")
        assert {await landing(vip) for _ in range(4)} == {"A", "B"}

        await a.service.stop_listening()
        down = await wait_for_health(engine, "rdp", "A", "down", timeout=5)
        assert "refused" in down.reason, down.reason
        assert [await landing(vip) for _ in range(3)] == ["B"] * 3

        await a.service.listen()
        await wait_for_health(engine, "rdp", "A", "up", timeout=5)
        b.health.answer = "FAIL"
        down = await wait_for_health(engine, "rdp", "B", "down", timeout=5)
        assert "FAIL" in down.reason, down.reason
        assert [await landing(vip) for _ in range(3)] == ["A"] * 3
