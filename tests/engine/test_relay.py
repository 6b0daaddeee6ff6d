"""Relaying one connection: half-close, counters, IPv6."""

from __future__ import annotations

import asyncio
import hashlib
import socket

import pytest

from balancer.engines import Engine
from balancer.state import Counters
from tests.backends import Addresses, EchoServer, ReplyAtEof, common_port, free_port, pattern

from . import (
    IO_TIMEOUT,
    Client,
    Revisions,
    landing,
    real_server,
    server_status,
    service_status,
    settled,
    virtual_service,
    wait_for,
)


async def test_half_close_still_gets_the_whole_reply(engine: Engine, net: Addresses) -> None:
    """The client sends, then shuts its write side: the server sees end of file and only then
    replies, and the reply arrives in full before both sides close."""
    tail = 3 * 1024 * 1024
    async with ReplyAtEof("A", net.ip(), tail) as backend:
        vip = (net.ip(), free_port(net.ip()))
        await Revisions(engine).apply(
            virtual_service("web", vip, [real_server("A", backend.address)])
        )
        request = pattern(500_000, seed=1)
        async with asyncio.timeout(IO_TIMEOUT):
            reader, writer = await asyncio.open_connection(*vip)
        try:
            async with asyncio.timeout(IO_TIMEOUT):
                writer.write(request)
                writer.write_eof()
                head = await reader.readline()
                body = await reader.read()  # to end of file
            digest = hashlib.blake2b(request).hexdigest()
            assert head.decode() == f"A {len(request)} {digest}\n"
            assert len(body) == tail
            assert body == pattern(tail)
        finally:
            writer.close()
            await writer.wait_closed()
        await wait_for(lambda: backend.active == 0, what="the server side is closed")

        async def relay_is_done() -> bool:
            return service_status(await engine.status(), "web").counters.active == 0

        await wait_for(relay_is_done, what="the engine has closed both sides")


async def test_counters_match_what_was_relayed(engine: Engine, net: Addresses) -> None:
    async with EchoServer("A", net.ip()) as a, EchoServer("B", net.ip()) as b:
        vip = (net.ip(), free_port(net.ip()))
        servers = [real_server("A", a.address), real_server("B", b.address)]
        await Revisions(engine).apply(virtual_service("web", vip, servers))
        greeting = b"hello\n"  # what Client.open sends and gets echoed, after "<name>\n"
        payloads = [1000, 5000, 30_000, 70_000]
        clients = [await Client.open(vip, greeting=greeting) for _ in payloads]
        try:
            sent = {"A": 0, "B": 0}
            got = {"A": 0, "B": 0}
            count = {"A": 0, "B": 0}
            for client, size in zip(clients, payloads, strict=True):
                await client.roundtrip(bytes(size))
                count[client.name] += 1
                sent[client.name] += len(greeting) + size
                got[client.name] += len(client.name) + 1 + len(greeting) + size
            assert count == {"A": 2, "B": 2}

            def expected(active: bool) -> dict[str, Counters]:
                per = {
                    name: Counters(
                        active=count[name] if active else 0,
                        total=count[name],
                        bytes_in=sent[name],
                        bytes_out=got[name],
                    )
                    for name in ("A", "B")
                }
                per["web"] = Counters(
                    active=len(clients) if active else 0,
                    total=len(clients),
                    bytes_in=sum(sent.values()),
                    bytes_out=sum(got.values()),
                )
                return per

            async def counters() -> dict[str, Counters]:
                status = await engine.status()
                found = {"web": service_status(status, "web").counters}
                for name in ("A", "B"):
                    found[name] = server_status(status, "web", name).counters
                return found

            assert await settled(counters, expected(active=True)) == expected(active=True)
        finally:
            for client in clients:
                await client.close()
        assert await settled(counters, expected(active=False)) == expected(active=False)


async def test_several_ports_each_go_to_the_same_port_of_the_server(
    engine: Engine, net: Addresses
) -> None:
    """A real server without a port of its own is reached on the port the client used."""
    vip_ip, server_ip = net.ip(), net.ip()
    ports = [common_port([vip_ip, server_ip]) for _ in range(2)]
    async with EchoServer("P1", server_ip, ports[0]), EchoServer("P2", server_ip, ports[1]):
        same_port = {"label": "A", "ip": server_ip}  # no port: the one the client used
        service = virtual_service("rdp", (vip_ip, ports[0]), [same_port])
        service["ports"] = ",".join(map(str, ports))
        await Revisions(engine).apply(service)

        assert [await landing((vip_ip, port)) for port in ports] == ["P1", "P2"]


def has_ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback on this machine")
async def test_ipv6_virtual_service(engine: Engine) -> None:
    async with EchoServer("A6", "::1") as backend:
        vip = ("::1", free_port("::1"))
        await Revisions(engine).apply(
            virtual_service("v6", vip, [real_server("A6", backend.address)])
        )
        client = await Client.open(vip)
        try:
            assert client.name == "A6"
            await client.roundtrip(pattern(100_000))
            assert await client.finish() == b""
        finally:
            await client.close()
        status = service_status(await engine.status(), "v6")
        assert (status.ip, status.counters.total) == ("::1", 1)


async def test_a_connection_idle_past_its_timeout_is_closed(engine: Engine, net: Addresses) -> None:
    """No byte either way for the shorter of client_timeout and server_timeout ends it; a
    connection that keeps talking past that time is left alone."""
    async with EchoServer("A", net.ip()) as backend:
        vip = (net.ip(), free_port(net.ip()))
        await Revisions(engine).apply(
            virtual_service(
                "idle", vip, [real_server("A", backend.address)],
                client_timeout=1, server_timeout=30,
            )
        )  # fmt: skip
        idle, busy = await Client.open(vip), await Client.open(vip)
        try:
            loop = asyncio.get_running_loop()
            started = loop.time()
            while loop.time() - started < 2.5:
                await busy.roundtrip(b"still here\n")
                await asyncio.sleep(0.2)
            async with asyncio.timeout(IO_TIMEOUT):
                assert await idle.reader.read() == b"", "the idle connection was not closed"
            await busy.roundtrip(b"and still\n")
        finally:
            await idle.close()
            await busy.close()
        await wait_for(lambda: _active(engine, "idle", 0), what="both connections to end")


async def _active(engine: Engine, label: str, count: int) -> bool:
    return service_status(await engine.status(), label).counters.active == count
