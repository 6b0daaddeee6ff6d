"""Test backends: small asyncio servers that stand in for real servers, controlled by the test.

- ``EchoServer``: waits for the client's first bytes, answers ``<name>\\n``, then echoes
  everything; a client that half-closes gets the rest of its echo and then end of file.
- ``ReplyAtEof``: says nothing until the client half-closes, then answers with a digest of what it
  received and a large reply, then closes (a test of half-close).
- ``Source``: after the client's first bytes, streams a given number of bytes with flow control
  and counts how many the proxy took (a test of the proxy's flow control).
- ``Stall``: accepts and never reads (a test of flow control the other way).
- ``SpeakFirst``: says its piece and half-closes at once, then listens to the client's to its
  end (a test of half-close from the server's side).
- ``Silent``: accepts and reads, and never answers (a real server that has hung).
- ``HealthEndpoint``: an HTTPS ``/psm/api/health`` page answering PASS or FAIL, switchable.

Every server can stop listening (new connections are refused) while the connections it has
keep working, listen again on the same port, and close (aborting what is left). All of them
are async context managers. Nothing here knows about the engine under test.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import socket
import ssl
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self, cast

from balancer.certificates import server_context

HEALTH_PATH = "/psm/api/health"


# --- addresses and ports ---------------------------------------------------------------------


class Addresses:
    """Distinct loopback addresses for one test: ``127.a.b.1``, ``127.a.b.2``... with ``a.b``
    drawn at random, so tests running at the same time (in other processes too) do not meet."""

    def __init__(self, rng: random.Random | None = None) -> None:
        rng = rng or random.SystemRandom()
        # 127.0.x.x is left alone: it is where everything else on the machine binds.
        self._prefix = f"127.{rng.randint(64, 254)}.{rng.randint(0, 255)}."
        self._next = 1

    def ip(self) -> str:
        if self._next > 254:
            raise RuntimeError("a test asked for more than 254 addresses")
        ip = f"{self._prefix}{self._next}"
        self._next += 1
        return ip


def free_port(ip: str) -> int:
    """A port nobody listens on at ``ip`` now (the kernel's choice), released for the caller."""
    return common_port([ip])


def common_port(ips: list[str]) -> int:
    """One port number free on every address of ``ips``, e.g. for a shared health-check port."""
    for _ in range(100):
        held: list[socket.socket] = []
        try:
            port = 0
            for ip in ips:
                sock = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET)
                held.append(sock)
                sock.bind((ip, port))
                port = sock.getsockname()[1]
            return port
        except OSError:
            continue
        finally:
            for sock in held:
                sock.close()
    raise RuntimeError(f"no common free port on {ips}")


# --- a listener that can stop and start again --------------------------------------------------


class _Backend:
    """What every backend shares: a listener that can stop and start, and its connections."""

    def __init__(
        self, name: str, host: str, port: int = 0, tls: ssl.SSLContext | None = None
    ) -> None:
        self.name = name
        self.host = host
        self.port = port
        self.tls = tls
        self.accepted = 0  # connections accepted, ever
        self.transports: set[asyncio.Transport] = set()
        self._server: asyncio.Server | None = None
        self._gone = asyncio.Event()

    def _protocol(self) -> asyncio.Protocol:
        raise NotImplementedError

    @property
    def active(self) -> int:
        return len(self.transports)

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    async def listen(self) -> Self:
        """Start (or start again) accepting connections on ``host:port``."""
        if self._server is not None:
            return self
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._protocol, self.host, self.port, ssl=self.tls, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop_listening(self) -> None:
        """New connections are refused from now on; those accepted carry on."""
        server, self._server = self._server, None
        if server is not None:
            server.close()

    def _opened(self, transport: asyncio.Transport) -> None:
        self.accepted += 1
        self.transports.add(transport)

    def _closed(self, transport: asyncio.Transport) -> None:
        self.transports.discard(transport)
        self._gone.set()

    async def close(self) -> None:
        """Stop listening and abort every connection, waiting until each is gone."""
        await self.stop_listening()
        for transport in list(self.transports):
            transport.abort()
        async with asyncio.timeout(5):
            while self.transports:
                self._gone.clear()
                await self._gone.wait()

    async def __aenter__(self) -> Self:
        return await self.listen()

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()


class _Connection(asyncio.Protocol):
    """A backend's side of one connection, with flow control: when the peer does not read what
    it is sent, reading stops too, so a backend never buffers without bound."""

    transport: asyncio.Transport

    def __init__(self, backend: _Backend) -> None:
        self.backend = backend

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.backend._opened(self.transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.backend._closed(self.transport)

    def pause_writing(self) -> None:
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        if not self.transport.is_closing():
            self.transport.resume_reading()


# --- the backends --------------------------------------------------------------------------------


class EchoServer(_Backend):
    """Announces its name after the client's first bytes, then echoes; at the client's EOF it
    finishes the echo and closes."""

    def __init__(self, name: str, host: str, port: int = 0) -> None:
        super().__init__(name, host, port)
        self.received = 0

    def _protocol(self) -> asyncio.Protocol:
        return _Echo(self)


class _Echo(_Connection):
    backend: EchoServer

    def __init__(self, backend: EchoServer) -> None:
        super().__init__(backend)
        self.announced = False

    def data_received(self, data: bytes) -> None:
        self.backend.received += len(data)
        if not self.announced:
            self.announced = True
            self.transport.write(self.backend.name.encode() + b"\n")
        self.transport.write(data)

    def eof_received(self) -> bool:
        return False  # the transport flushes the echo, then closes


class ReplyAtEof(_Backend):
    """Reads until the client half-closes, then replies ``<name> <count> <blake2b hex>\\n``
    about what it received, followed by ``tail`` bytes of ``pattern(tail)``, then closes."""

    def __init__(self, name: str, host: str, tail: int, port: int = 0) -> None:
        super().__init__(name, host, port)
        self.tail = tail

    def _protocol(self) -> asyncio.Protocol:
        return _ReplyAtEof(self)


class _ReplyAtEof(_Connection):
    backend: ReplyAtEof

    def __init__(self, backend: ReplyAtEof) -> None:
        super().__init__(backend)
        self.count = 0
        self.digest = hashlib.blake2b()

    def data_received(self, data: bytes) -> None:
        self.count += len(data)
        self.digest.update(data)

    def eof_received(self) -> bool:
        line = f"{self.backend.name} {self.count} {self.digest.hexdigest()}\n"
        self.transport.write(line.encode())
        self.transport.write(pattern(self.backend.tail))
        return False


class Source(_Backend):
    """After the client's first bytes, offers ``size`` bytes as fast as the proxy takes them.
    ``taken`` counts the bytes the kernel accepted from it."""

    CHUNK = 1024 * 1024

    def __init__(self, name: str, host: str, size: int, port: int = 0) -> None:
        super().__init__(name, host, port)
        self.size = size
        self.written = 0  # handed to the transport
        self.buffered: Callable[[], int] = lambda: 0

    @property
    def taken(self) -> int:
        return self.written - self.buffered()

    def _protocol(self) -> asyncio.Protocol:
        return _Source(self)


class _Source(_Connection):
    backend: Source
    _block = os.urandom(Source.CHUNK)

    def __init__(self, backend: Source) -> None:
        super().__init__(backend)
        self.started = False
        self.paused = False

    def data_received(self, data: bytes) -> None:
        if not self.started:
            self.started = True
            self.backend.buffered = self.transport.get_write_buffer_size
            self._offer()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._offer()

    def _offer(self) -> None:
        source = self.backend
        while not self.paused and source.written < source.size:
            if self.transport.is_closing():
                return
            chunk = self._block[: min(Source.CHUNK, source.size - source.written)]
            source.written += len(chunk)
            self.transport.write(chunk)  # may call pause_writing()
        if source.written >= source.size and not self.transport.is_closing():
            self.transport.write_eof()


class Stall(_Backend):
    """Accepts connections and never reads from them: a real server that has stopped reading."""

    def _protocol(self) -> asyncio.Protocol:
        return _Stall(self)


class _Stall(_Connection):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.transport.pause_reading()


class SpeakFirst(ReplyAtEof):
    """Sends ``pattern(tail)`` as soon as a client connects and half-closes; reads on, and at
    the client's end of file keeps ``(count, blake2b hex)`` of what it heard in ``heard`` and
    closes."""

    def __init__(self, name: str, host: str, tail: int, port: int = 0) -> None:
        super().__init__(name, host, tail, port)
        self.heard: list[tuple[int, str]] = []

    def _protocol(self) -> asyncio.Protocol:
        return _SpeakFirst(self)


class _SpeakFirst(_ReplyAtEof):
    backend: SpeakFirst

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.transport.write(pattern(self.backend.tail))
        self.transport.write_eof()

    def eof_received(self) -> bool:
        self.backend.heard.append((self.count, self.digest.hexdigest()))
        return False


class Silent(_Backend):
    """Accepts connections and reads them, and never says a word: a real server that hangs.
    ``received`` counts the bytes it read."""

    def __init__(self, name: str, host: str, port: int = 0) -> None:
        super().__init__(name, host, port)
        self.received = 0

    def _protocol(self) -> asyncio.Protocol:
        return _Silent(self)


class _Silent(_Connection):
    backend: Silent

    def data_received(self, data: bytes) -> None:
        self.backend.received += len(data)


class HealthEndpoint(_Backend):
    """An HTTPS health page: ``GET /psm/api/health`` answers ``answer`` (PASS or FAIL, set it
    at any time) with status 200, as a PSM server's page does; other paths get 404."""

    def __init__(self, host: str, tls: ssl.SSLContext, port: int = 0, answer: str = "PASS") -> None:
        super().__init__("health", host, port, tls)
        self.answer = answer
        self.checks = 0

    def _protocol(self) -> asyncio.Protocol:
        return _HealthPage(self)


class _HealthPage(_Connection):
    backend: HealthEndpoint

    def __init__(self, backend: HealthEndpoint) -> None:
        super().__init__(backend)
        self.request = b""

    def data_received(self, data: bytes) -> None:
        self.request += data
        if b"\r\n\r\n" not in self.request:
            if len(self.request) > 16384:
                self.transport.abort()
            return
        line = self.request.split(b"\r\n", 1)[0].split()
        self.backend.checks += 1
        if len(line) == 3 and line[1] == HEALTH_PATH.encode():
            status, body = "200 OK", self.backend.answer.encode()
        else:
            status, body = "404 Not Found", b"not here"
        head = (
            f"HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        )
        self.transport.write(head.encode() + (body if line[0] != b"HEAD" else b""))
        self.transport.close()

    def eof_received(self) -> bool:
        return False


def pattern(size: int, seed: int = 0) -> bytes:
    """``size`` bytes that are not all alike, the same for the same ``size`` and ``seed``."""
    return random.Random(seed).randbytes(size)


def self_signed(directory: Path) -> ssl.SSLContext:
    """A server TLS context with a self-signed certificate, as a PSM server has."""
    return server_context(directory / "psm.pem", "psm.test")
