"""Layer 7 SNAT TCP relaying: a client's bytes to its real server and back, unchanged.

Built on ``asyncio.BufferedProtocol`` rather than streams (streams relays measured 2-4x slower
here), and buffered rather than plain so that a chunk read is written on from where it was read:
a plain Protocol's reads are copied once more, into a fresh bytes object (see ReadBuffer).
Flow control: when one side's write buffer passes the high-water mark, reading from the other
side pauses until it drains, so a slow peer never makes the engine buffer without bound.
Half-close: an EOF from one side is passed on as an EOF to the other, and the pair closes when
both have ended. The two protocol objects refer to each other; the cycle is broken when the
relay finishes, so the garbage collector never has to find it.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections.abc import Coroutine
from typing import Any, cast

from balancer.engines.builtin.service import RunningServer, RunningService
from balancer.engines.builtin.timeouts import Bucket, Timeouts

log = logging.getLogger(__name__)

HIGH_WATER = 512 * 1024
LOW_WATER = 128 * 1024
# Client bytes held while the real server connection is being made (RDP clients speak first).
PENDING_LIMIT = 256 * 1024
# Long idle RDP sessions need keepalive to notice a vanished peer; these find one in ~7 minutes.
KEEPALIVE = (
    (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
    (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 300),
    (socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 30),
    (socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 4),
)
_RESET = struct.pack("ii", 1, 0)
# As much as one read takes. uvloop's own is 256,000 bytes; a bigger one lets a relay that fell
# behind catch up in one read and one write, and so one wakeup of the peer rather than four (one
# stream of bulk data measured ~20% faster).
READ_SIZE = 1024 * 1024


# A chunk this small is copied rather than written from the buffer: were the peer slow to take
# it, its rest would pin a whole READ_SIZE buffer. Interactive traffic (an RDP session's updates,
# TLS records of 16 KiB) stays under it; bulk reads, 64 KiB and more, are relayed without a copy.
COPY_UP_TO = 32 * 1024


class ReadBuffer:
    """The one buffer every connection of the process reads into. A big chunk is written on as
    soon as it is read, so the buffer is free again for the next read, whoever's it is; unless
    the peer could not take all of it: then the transport keeps a view of the buffer for the
    rest, and the next read gets a fresh one. One buffer, not one per connection: idle
    connections are many."""

    __slots__ = ("view",)

    def __init__(self) -> None:
        self.view = memoryview(bytearray(READ_SIZE))

    def relay(self, size: int, transport: asyncio.Transport) -> None:
        if size <= COPY_UP_TO or transport.get_write_buffer_size():
            # Small, or queued behind what the peer has not taken yet: a copy, cheaper than a
            # new (zeroed) buffer, and it holds only its own bytes.
            transport.write(bytes(self.view[:size]))
            return
        transport.write(self.view[:size])
        if transport.get_write_buffer_size():
            self.view = memoryview(bytearray(READ_SIZE))


_reads = ReadBuffer()


def keepalive(sock: socket.socket) -> None:
    for level, option, value in KEEPALIVE:
        sock.setsockopt(level, option, value)


class ClientSide(asyncio.BufferedProtocol):
    """The client's connection to the virtual service; it owns the relay."""

    __slots__ = (
        "bucket",
        "client",
        "client_eof",
        "closed",
        "connecting",
        "deadline",
        "loop",
        "pending",
        "pending_size",
        "seen",
        "server",
        "server_side",
        "service",
        "timeouts",
        "transport",
        "tried",
        "vip_port",
    )

    def __init__(self, service: RunningService, timeouts: Timeouts, vip_port: int) -> None:
        self.service = service
        self.timeouts = timeouts
        self.loop = timeouts.loop
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # set at once
        self.server: RunningServer | None = None
        self.server_side: ServerSide | None = None
        # Both are allocated only when needed: most clients never wait nor need a second server.
        self.pending: list[bytes] | None = None
        self.pending_size = 0
        self.client_eof = False
        self.closed = False
        self.tried: tuple[RunningServer, ...] = ()
        self.bucket: Bucket | None = None  # where the connect or idle timeout is filed
        self.deadline = 0.0  # of the connection being made
        self.client = ""
        self.vip_port = vip_port
        self.connecting: Coroutine[Any, Any, tuple[asyncio.BaseTransport, ServerSide]] | None = None
        self.seen = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one.
        self.transport = transport = cast(asyncio.Transport, transport)
        transport.set_write_buffer_limits(HIGH_WATER, LOW_WATER)
        peer = transport.get_extra_info("peername")
        if peer is None:
            # Reset while it waited to be accepted. Raising here would leave uvloop holding
            # its socket for good: one descriptor lost per such client.
            self.closed = True
            transport.abort()
            return
        self.client = peer[0]
        service = self.service
        service.active += 1
        service.total += 1
        self.seen = self.loop.time()
        self._dispatch()

    def _dispatch(self) -> None:
        """Pick a real server not yet tried for this client (redispatch), then the fallback."""
        service = self.service
        server = None
        if len(self.tried) < service.config.retries:
            server = service.choose(self.client, self.tried)
        if server is None and service.fallback is not None and service.fallback not in self.tried:
            server = service.fallback
        if server is None:
            self._refuse()
            return
        server.active += 1
        server.total += 1
        self.server = server
        port = server.config.target_port(self.vip_port)
        # The connection is made by stepping uvloop's create_connection coroutine by hand, as a
        # Task would but without one (and without asyncio.timeout): a Task, its first scheduling
        # and a Timeout per client cost more than the rest of the choice put together.
        self.connecting = self.loop.create_connection(lambda: ServerSide(self), server.host, port)
        self.deadline = self.loop.time() + service.config.connect_timeout
        self._file(self.deadline)
        self._connect_step()

    def _connect_step(self, waited: object = None) -> None:
        connecting = self.connecting
        if connecting is None:
            return
        try:
            future = connecting.send(None)
        except StopIteration as done:
            self._connected(done.value[0], done.value[1])
        except OSError as error:
            self._connect_failed(error.strerror or str(error))
        else:
            future.add_done_callback(self._connect_step)

    def _file(self, when: float) -> None:
        self._unfile()
        self.bucket = self.timeouts.add(self, when)

    def _unfile(self) -> None:
        if self.bucket is not None:
            self.bucket.discard(self)
            self.bucket = None

    def expire(self) -> None:
        """The connect timeout, then the idle timeout, may have come (see Timeouts)."""
        self.bucket = None
        if self.connecting is None:
            self._check_idle()
        elif self.loop.time() < self.deadline:
            self._file(self.deadline)
        else:
            connecting, self.connecting = self.connecting, None
            connecting.close()  # closes the half-made connection
            self._connect_failed("connect timeout")

    def _connect_failed(self, why: str) -> None:
        server = self.server
        assert server is not None
        server.active -= 1
        self.server = None
        self.connecting = None
        self._unfile()
        config = server.config
        log.info(
            "%s: cannot reach real server %s at %s:%s for %s: %s",
            self.service.label,
            server.label,
            server.host,
            config.target_port(self.vip_port),
            self.client,
            why,
        )
        self.tried += (server,)
        self._dispatch()

    def _connected(self, transport: asyncio.BaseTransport, side: ServerSide) -> None:
        """The real server answered. (A client that left meanwhile closed the coroutine, and
        with it the half-made connection: see connection_lost.)"""
        self.connecting = None
        server = self.server
        assert server is not None
        # One socket object for the four options: each option set through uvloop's pseudo-socket
        # would make (and unmake) a socket object of its own, with system calls to match.
        fd = transport.get_extra_info("socket").fileno()
        sock = socket.socket(server.family, socket.SOCK_STREAM, 0, fd)
        try:
            keepalive(sock)
        finally:
            sock.detach()
        server.bytes_in += self.pending_size  # client bytes that arrived while connecting
        self.service.connected(self.client, server)
        self._attach(side)

    def _attach(self, side: ServerSide) -> None:
        self.server_side = side
        if self.pending is not None:
            side.transport.writelines(self.pending)
            self.pending = None
            self.pending_size = 0
            self.transport.resume_reading()
        if self.client_eof:
            side.transport.write_eof()
        # Filed for the connect timeout, the relay is checked for idleness then; sooner if
        # idleness would end it sooner.
        config = self.service.config
        idle = self.seen + min(config.client_timeout, config.server_timeout)
        if idle < self.deadline:
            self._file(idle)
        self.deadline = 0.0  # the float is let go: idle connections are many

    def _check_idle(self) -> None:
        """No byte either way for the shorter of the client and server timeouts ends it."""
        interval = min(self.service.config.client_timeout, self.service.config.server_timeout)
        deadline = self.seen + interval
        if self.loop.time() >= deadline:
            log.info("%s: %s idle for %ss, closed", self.service.label, self.client, interval)
            self.abort()
        else:
            self._file(deadline)

    def _refuse(self) -> None:
        log.info("%s: no real server for %s, connection refused", self.service.label, self.client)
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            # A reset, not a FIN: the client learns at once that there is nobody to serve it.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
        self.transport.abort()

    def get_buffer(self, sizehint: int) -> memoryview:
        return _reads.view

    def buffer_updated(self, size: int) -> None:
        self.seen = self.loop.time()
        self.service.bytes_in += size
        side = self.server_side
        if side is not None:
            self.server.bytes_in += size  # type: ignore[union-attr]  # set while attached
            _reads.relay(size, side.transport)
            return
        data = bytes(_reads.view[:size])  # kept until the real server answers
        if self.pending is None:
            self.pending = [data]
        else:
            self.pending.append(data)
        self.pending_size += size
        if self.pending_size >= PENDING_LIMIT:
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        self.client_eof = True
        side = self.server_side
        if side is not None:
            if side.server_eof:
                self.close()
            else:
                side.transport.write_eof()
        return True

    def pause_writing(self) -> None:
        if self.server_side is not None:
            self.server_side.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.server_side is not None:
            self.server_side.transport.resume_reading()

    def close(self) -> None:
        """Both sides have ended: flush what is buffered and close both."""
        self.transport.close()
        if self.server_side is not None:
            self.server_side.transport.close()

    def abort(self) -> None:
        self.transport.abort()
        if self.server_side is not None:
            self.server_side.transport.abort()

    def server_lost(self, error: Exception | None) -> None:
        """The real server's connection has closed; the client's follows."""
        if error is None:
            self.transport.close()
        else:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed:
            return
        self.closed = True
        self._unfile()
        connecting, self.connecting = self.connecting, None
        if connecting is not None:
            # Nobody is left to serve: the half-made connection to the real server is dropped.
            connecting.close()
            self.server.active -= 1  # type: ignore[union-attr]  # set while connecting
            self.server = None
        service = self.service
        service.active -= 1
        server = self.server
        if server is not None and self.server_side is not None:
            server.active -= 1
            service.finished(self.client, server)
        side = self.server_side
        if side is not None:
            side.client = None
            if exc is None:
                side.transport.close()
            else:
                side.transport.abort()
        self.server_side = None
        self.pending = None


class ServerSide(asyncio.BufferedProtocol):
    """The engine's connection to the real server, relaying back to its client."""

    __slots__ = ("client", "server_eof", "transport")

    def __init__(self, client: ClientSide) -> None:
        self.client: ClientSide | None = client
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # set at once
        self.server_eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)
        transport.set_write_buffer_limits(HIGH_WATER, LOW_WATER)

    def get_buffer(self, sizehint: int) -> memoryview:
        return _reads.view

    def buffer_updated(self, size: int) -> None:
        client = self.client
        if client is None:
            return
        client.seen = client.loop.time()
        client.service.bytes_out += size
        client.server.bytes_out += size  # type: ignore[union-attr]  # set while connected
        _reads.relay(size, client.transport)

    def eof_received(self) -> bool:
        self.server_eof = True
        client = self.client
        if client is not None:
            if client.client_eof:
                client.close()
            else:
                client.transport.write_eof()
        return True

    def pause_writing(self) -> None:
        if self.client is not None:
            self.client.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.client is not None:
            self.client.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        client, self.client = self.client, None
        if client is not None and client.server_side is self:
            client.server_lost(exc)
