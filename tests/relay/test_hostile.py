"""Hostile peers: half-closes from either side, resets mid-stream from either side, clients
that never read, real servers that never answer or are never reached, and thousands of
connections opened and dropped. After each, the relay has let go of everything."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import socket

import pytest

from balancer.engines import Engine
from tests.backends import (
    Addresses,
    EchoServer,
    ReplyAtEof,
    Silent,
    Source,
    SpeakFirst,
    free_port,
    pattern,
)
from tests.engine import (
    IO_TIMEOUT,
    Client,
    Revisions,
    landing,
    real_server,
    virtual_service,
    wait_for,
)
from tests.engine.test_flow import connected, rss

from . import MIB, black_hole, linger_zero, open_fds, quiet, relay_pid


async def serve(
    revisions: Revisions, net: Addresses, *servers: tuple[str, int], **settings: object
) -> tuple[str, int]:
    """A virtual service "hostile" on a new VIP in front of ``servers`` (labelled A, B...)."""
    vip = (net.ip(), free_port(net.ip()))
    labels = "ABCDEFGH"
    documents = [real_server(labels[i], address) for i, address in enumerate(servers)]
    await revisions.apply(virtual_service("hostile", vip, documents, **settings))
    return vip


@pytest.mark.parametrize("first", ["client", "server"])
async def test_a_half_close_from_either_side_lets_the_other_finish(
    engine: Engine, revisions: Revisions, net: Addresses, first: str
) -> None:
    """One side sends and half-closes; the other still gets every byte of it, and its own
    reply, sent after, arrives whole too."""
    size = 2 * MIB
    ours = pattern(size, seed=7)
    digest = hashlib.blake2b(ours).hexdigest()
    backend: ReplyAtEof | SpeakFirst
    backend = (
        ReplyAtEof("A", net.ip(), size) if first == "client" else SpeakFirst("A", net.ip(), size)
    )
    async with backend:
        vip = await serve(revisions, net, backend.address)
        async with asyncio.timeout(IO_TIMEOUT):
            reader, writer = await asyncio.open_connection(*vip)
        try:
            async with asyncio.timeout(IO_TIMEOUT):
                if first == "client":
                    writer.write(ours)
                    writer.write_eof()
                    assert await reader.readline() == f"A {size} {digest}\n".encode()
                    assert await reader.read() == pattern(size)
                else:
                    assert await reader.read() == pattern(size)  # to the server's EOF
                    writer.write(ours)
                    writer.write_eof()
                    await writer.drain()
            if first == "server":
                assert isinstance(backend, SpeakFirst)
                await wait_for(
                    lambda: backend.heard == [(size, digest)], what="the server heard all"
                )
        finally:
            writer.close()
        await wait_for(lambda: backend.active == 0, what="the server side is closed")
        await quiet(engine, "hostile")


@pytest.mark.parametrize("who", ["client", "server"])
async def test_a_reset_mid_stream_ends_both_sides(
    engine: Engine, revisions: Revisions, net: Addresses, who: str
) -> None:
    """A reset from either side, while bytes flow both ways, closes the other side too."""
    async with EchoServer("A", net.ip()) as backend:
        vip = await serve(revisions, net, backend.address)
        client = await Client.open(vip)
        try:
            client.writer.write(pattern(4 * MIB))  # in flight both ways when the reset comes
            async with asyncio.timeout(IO_TIMEOUT):
                await client.reader.readexactly(MIB)
            if who == "client":
                linger_zero(client.writer.get_extra_info("socket"))
                client.writer.transport.abort()
                await wait_for(lambda: backend.active == 0, what="the server side is closed")
            else:
                for transport in list(backend.transports):
                    transport.abort()
                with contextlib.suppress(ConnectionError):
                    async with asyncio.timeout(IO_TIMEOUT):
                        while await client.reader.read(MIB):
                            pass  # what was relayed before the reset, then the end
        finally:
            await client.close()
        await quiet(engine, "hostile")
        served = await Client.open(vip)  # and the service is none the worse
        await served.close()


async def test_clients_that_never_read_hold_bounded_memory(
    engine: Engine, revisions: Revisions, net: Addresses
) -> None:
    """Real servers offer 256 MiB each to clients that read nothing: the relay stops taking
    from the servers rather than buffering, and lets everything go when the clients reset."""
    offered, clients = 256 * MIB, 3
    async with Source("A", net.ip(), offered) as backend:
        vip = await serve(revisions, net, backend.address)
        pid = await relay_pid(engine)
        before = rss(pid)
        loop = asyncio.get_running_loop()
        socks = [await connected(vip) for _ in range(clients)]
        try:
            for sock in socks:
                await loop.sock_sendall(sock, b"go\n")
            # The servers hand over no more: the relay has stopped taking.
            last, still = -1, 0
            async with asyncio.timeout(60):
                while still < 10:
                    await asyncio.sleep(0.1)
                    still = still + 1 if backend.taken == last else 0
                    last = backend.taken
            grown = rss(pid) - before
            assert backend.taken < clients * 96 * MIB, f"{backend.taken / MIB:.0f} MiB taken"
            assert grown < 48 * MIB, f"the relay grew by {grown / MIB:.0f} MiB"
            assert backend.active == clients
        finally:
            for sock in socks:
                linger_zero(sock)
                sock.close()
        await wait_for(lambda: backend.active == 0, what="the servers' sides are closed")
        await quiet(engine, "hostile")


async def test_a_server_never_reached_is_redispatched_one_that_never_answers_times_out_idle(
    engine: Engine, revisions: Revisions, net: Addresses
) -> None:
    """A real server whose connection is never made costs a client the connect timeout, then
    the client is sent to the next server. A server that accepts and never answers is
    connected: the connect timeout does not apply, the idle timeout ends it."""
    with black_hole(net.ip()) as hole:
        async with EchoServer("B", net.ip()) as echo:
            vip = await serve(revisions, net, hole, echo.address, connect_timeout=0.5, retries=2)
            # Round robin sends one of the two to the hole first.
            assert [await landing(vip) for _ in range(2)] == ["B", "B"]
    async with Silent("C", net.ip()) as silent:
        idle = 4
        vip = await serve(revisions, net, silent.address, connect_timeout=0.5,
                          client_timeout=idle, server_timeout=idle)  # fmt: skip
        async with asyncio.timeout(IO_TIMEOUT):
            reader, writer = await asyncio.open_connection(*vip)
        try:
            writer.write(b"hello\n")
            await wait_for(lambda: silent.received == 6, what="the silent server got hello")
            await asyncio.sleep(1.0)  # twice the connect timeout, a quarter of the idle one
            writer.write(b"again\n")
            await wait_for(lambda: silent.received == 12, what="it is still connected")
            async with asyncio.timeout(idle + IO_TIMEOUT):
                assert await reader.read() == b"", "the silent server's client got an answer"
        finally:
            writer.close()
        await wait_for(lambda: silent.active == 0, what="the idle timeout closed both sides")
    await quiet(engine, "hostile")


FLOOD = 2000  # connections
FLOOD_AT_ONCE = 200


async def test_thousands_of_connections_opened_and_dropped_leave_nothing_behind(
    engine: Engine, revisions: Revisions, net: Addresses
) -> None:
    """Connections that close or reset at once, before or after saying hello, before or after
    their server answers: afterwards the relay holds the descriptors it held before."""
    async with EchoServer("A", net.ip()) as backend:
        vip = await serve(revisions, net, backend.address)
        await (await Client.open(vip)).close()  # what a first connection sets up is not a leak
        await quiet(engine, "hostile")
        pid = await relay_pid(engine)
        before = open_fds(pid)
        loop = asyncio.get_running_loop()
        sources = [net.ip() for _ in range(4)]
        slots = asyncio.Semaphore(FLOOD_AT_ONCE)
        failures: list[str] = []

        async def one(index: int, source: str) -> None:
            sock = socket.socket()
            try:
                sock.setblocking(False)
                sock.bind((source, 0))
                async with asyncio.timeout(IO_TIMEOUT):
                    await loop.sock_connect(sock, vip)
                    if index % 4 >= 2:
                        await loop.sock_sendall(sock, b"hello\n")
                    if index % 4 == 3:
                        assert (await loop.sock_recv(sock, 2)).startswith(b"A")
                if index % 2:
                    linger_zero(sock)
            except (OSError, TimeoutError, AssertionError) as error:
                failures.append(f"{index}: {type(error).__name__}: {error}")
            finally:
                sock.close()
                slots.release()

        tasks = []
        for index, source in zip(range(FLOOD), itertools.cycle(sources), strict=False):
            await slots.acquire()
            tasks.append(asyncio.create_task(one(index, source)))
        await asyncio.gather(*tasks)
        assert failures == []
        await quiet(engine, "hostile")
        await wait_for(lambda: backend.active == 0, what="every server side is closed")
        # The control connection that asked for the status may still be closing.
        await wait_for(lambda: open_fds(pid) <= before + 2, what=f"{pid} holds {before} fds again")
        served = await Client.open(vip)
        await served.close()
