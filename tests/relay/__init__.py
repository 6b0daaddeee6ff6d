"""The relay suite: what every relay must do with hostile and ordinary peers, run on the
built-in engine's Python relay, its compiled core and HAProxy (see conftest.py).

The engine suite (tests/engine/) holds the engines to the product's behaviour (balancing,
persistence, health, commits); this suite holds the relay itself to its duties: both
directions and their half-closes, resets, peers that never read or never answer, floods of
connections that come and go, changes of server state under traffic, and nothing leaking.
Every test here speaks through real sockets, bounded in count and time."""

from __future__ import annotations

import contextlib
import os
import socket
import struct
from collections.abc import Iterator
from typing import Protocol

from balancer.engines import Engine
from tests.engine import service_status, wait_for

MIB = 1024 * 1024


def open_fds(pid: int) -> int:
    """How many file descriptors process ``pid`` holds."""
    return len(os.listdir(f"/proc/{pid}/fd"))


async def relay_pid(engine: Engine) -> int:
    """The process that relays (HAProxy's current worker; the built-in engine's process)."""
    return (await engine.status()).pid


async def quiet(engine: Engine, label: str) -> None:
    """Wait until virtual service ``label`` relays no connection any more."""

    async def none_active() -> bool:
        return service_status(await engine.status(), label).counters.active == 0

    await wait_for(none_active, what=f"{label} has no connection left")


class Settable(Protocol):
    def setsockopt(self, level: int, option: int, value: bytes, /) -> None: ...


def linger_zero(sock: Settable) -> None:
    """Make the close of ``sock`` a reset rather than a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


@contextlib.contextmanager
def black_hole(ip: str) -> Iterator[tuple[str, int]]:
    """An address whose connections are never made: a listener whose accept queue is full,
    so the kernel drops every new SYN, as a server behind a dropping firewall would."""
    with contextlib.ExitStack() as stack:
        listener = stack.enter_context(socket.socket())
        listener.bind((ip, 0))
        listener.listen(0)
        address = listener.getsockname()
        for _ in range(3):  # a backlog of 0 still queues one; the rest are never answered
            filler = stack.enter_context(socket.socket())
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(address)
        yield address
