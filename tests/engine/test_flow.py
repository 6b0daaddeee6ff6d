"""Byte integrity of a large transfer, and flow control when a client stops reading."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
from pathlib import Path

import pytest

from balancer.engines import Engine
from tests.backends import Addresses, EchoServer, Source, Stall, free_port

from . import Revisions, real_server, virtual_service

MIB = 1024 * 1024
GIB = 1024 * MIB
CHUNK = 4 * MIB


async def connected(address: tuple[str, int]) -> socket.socket:
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        async with asyncio.timeout(5):
            await loop.sock_connect(sock, address)
    except BaseException:
        sock.close()
        raise
    return sock


async def receive_all(sock: socket.socket, sink: hashlib.blake2b | None = None) -> int:
    """Read ``sock`` to end of file, feeding ``sink``; returns the byte count."""
    loop = asyncio.get_running_loop()
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    total = 0
    while count := await loop.sock_recv_into(sock, buffer):
        if sink is not None:
            sink.update(view[:count])
        total += count
    return total


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_a_gibibyte_arrives_byte_identical(engine: Engine, net: Addresses) -> None:
    """1 GiB each way through an echo backend, both ends hashed as they stream."""
    async with EchoServer("A", net.ip()) as backend:
        vip = (net.ip(), free_port(net.ip()))
        service = virtual_service("bulk", vip, [real_server("A", backend.address)])
        await Revisions(engine).apply(service)
        loop = asyncio.get_running_loop()
        name = b"A\n"  # the echo backend's announcement, ahead of the echo
        expected, received = hashlib.blake2b(name), hashlib.blake2b()
        block = os.urandom(CHUNK)
        with await connected(vip) as sock:

            async def send() -> None:
                for index in range(GIB // CHUNK):
                    chunk = index.to_bytes(8, "little") + block[8:]  # no two chunks alike
                    expected.update(chunk)
                    await loop.sock_sendall(sock, chunk)
                sock.shutdown(socket.SHUT_WR)

            sender = asyncio.create_task(send())
            try:
                async with asyncio.timeout(150):
                    total = await receive_all(sock, received)
            finally:
                sender.cancel()
            await asyncio.wait([sender])
            assert not sender.cancelled()
            assert sender.exception() is None

        assert total == len(name) + GIB
        assert received.digest() == expected.digest()


def rss(pid: int) -> int:
    """The resident memory of process ``pid``, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_a_client_that_stops_reading_does_not_swell_the_engine(
    engine: Engine, net: Addresses
) -> None:
    """The backend offers 512 MiB to a client that reads nothing: the engine must stop
    reading from the backend rather than buffer it."""
    offered = 512 * MIB
    async with Source("A", net.ip(), offered) as backend:
        vip = (net.ip(), free_port(net.ip()))
        await Revisions(engine).apply(
            virtual_service("bulk", vip, [real_server("A", backend.address)])
        )
        pid = (await engine.status()).pid
        before = rss(pid)
        loop = asyncio.get_running_loop()
        with await connected(vip) as sock:
            await loop.sock_sendall(sock, b"go\n")
            # Wait until the backend can hand over no more: the proxy has stopped taking.
            last, still = -1, 0
            async with asyncio.timeout(60):
                while still < 8:
                    await asyncio.sleep(0.25)
                    taken = backend.taken
                    still = still + 1 if taken == last else 0
                    last = taken
            grown = rss(pid) - before
            taken = backend.taken
            assert taken < 128 * MIB, f"the proxy took {taken / MIB:.0f} MiB nobody read"
            assert grown < 64 * MIB, f"the engine grew by {grown / MIB:.0f} MiB"

            # Reading again resumes the flow, and every byte offered arrives.
            async with asyncio.timeout(60):
                total = await receive_all(sock)
        assert total == offered


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_a_server_that_stops_reading_does_not_swell_the_engine(
    engine: Engine, net: Addresses
) -> None:
    """The client offers 512 MiB to a real server that reads nothing: the engine must stop
    reading from the client rather than buffer it."""
    offered = 512 * MIB
    async with Stall("A", net.ip()) as backend:
        vip = (net.ip(), free_port(net.ip()))
        await Revisions(engine).apply(
            virtual_service("bulk", vip, [real_server("A", backend.address)])
        )
        pid = (await engine.status()).pid
        before = rss(pid)
        loop = asyncio.get_running_loop()
        sent = 0
        with await connected(vip) as sock:

            async def send() -> None:
                nonlocal sent
                chunk = bytes(MIB)
                while sent < offered:
                    await loop.sock_sendall(sock, chunk)
                    sent += len(chunk)

            sender = asyncio.create_task(send())
            try:
                last, still = -1, 0
                async with asyncio.timeout(60):
                    while still < 8:
                        await asyncio.sleep(0.25)
                        assert not sender.done(), "the sender ended"
                        still = still + 1 if sent == last else 0
                        last = sent
            finally:
                sender.cancel()
                await asyncio.wait([sender])
            grown = rss(pid) - before
            assert sent < 128 * MIB, f"the proxy took {sent / MIB:.0f} MiB nobody read"
            assert grown < 64 * MIB, f"the engine grew by {grown / MIB:.0f} MiB"
            assert backend.active == 1
