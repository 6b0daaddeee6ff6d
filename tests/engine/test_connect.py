"""Connecting to a real server: one that never answers is given up after connect_timeout and
the client is sent to another; a client that leaves meanwhile leaves nothing behind."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from contextlib import contextmanager

from balancer.engines import Engine
from tests.backends import Addresses, EchoServer, free_port

from . import IO_TIMEOUT, Revisions, landing, real_server, server_status, virtual_service, wait_for


@contextmanager
def silent(ip: str) -> Iterator[tuple[str, int]]:
    """An address whose SYNs go unanswered: a listener whose queue is full drops them."""
    with socket.socket() as listener, socket.socket() as filler:
        listener.bind((ip, 0))
        listener.listen(0)
        filler.connect(listener.getsockname())  # the one place in the queue, never accepted
        yield listener.getsockname()


async def test_a_server_that_never_answers_is_given_up(engine: Engine, net: Addresses) -> None:
    async with EchoServer("B", net.ip()) as b:
        with silent(net.ip()) as nowhere:
            vip = (net.ip(), free_port(net.ip()))
            servers = [real_server("A", nowhere), real_server("B", b.address)]
            await Revisions(engine).apply(virtual_service("web", vip, servers, connect_timeout=0.5))
            names = [await landing(vip, net.ip()) for _ in range(4)]
            assert names == ["B"] * 4, "A was tried in turn and given up"

            async def a_is_let_go() -> bool:
                return server_status(await engine.status(), "web", "A").counters.active == 0

            await wait_for(a_is_let_go, what="no connection to A is left")


async def test_a_client_that_leaves_while_connecting(engine: Engine, net: Addresses) -> None:
    with silent(net.ip()) as nowhere:
        vip = (net.ip(), free_port(net.ip()))
        servers = [real_server("A", nowhere)]
        await Revisions(engine).apply(virtual_service("web", vip, servers, connect_timeout=2))
        async with asyncio.timeout(IO_TIMEOUT):
            _, writer = await asyncio.open_connection(*vip)
        writer.write(b"hello\n")

        async def connecting() -> bool:
            return server_status(await engine.status(), "web", "A").counters.active == 1

        await wait_for(connecting, what="the engine is connecting to A")
        writer.close()

        async def nothing_left() -> bool:
            status = await engine.status()
            shown = server_status(status, "web", "A").counters
            return (shown.active, status.virtual_services[0].counters.active) == (0, 0)

        await wait_for(nothing_left, what="the client and its half-made connection are gone")
