"""The behavioural suite of the data plane, shared by every engine.

Tests speak to an engine only through the Engine protocol (``attach``, ``apply``, ``status``,
``stop``) and through real sockets, so the same tests hold any engine to the same behaviour.
This module holds what the tests share: configuration documents, clients, status look-ups and
``wait_for``.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import inspect
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from balancer.engines import Engine
from balancer.model import Config
from balancer.plan import Plan, make
from balancer.state import EngineStatus, RealServerStatus, VirtualServiceStatus
from balancer.validate import parse
from tests.backends import HEALTH_PATH, Addresses, EchoServer, HealthEndpoint, common_port

IO_TIMEOUT = 5.0  # no single socket operation of a test may take longer than this

# Checks quick enough that a test sees a server go down or up in about a second.
FAST_CHECK = {"interval": 0.2, "timeout": 1.0, "rise": 2, "fall": 2}
NO_CHECK = {"type": "none"}

Document = dict[str, Any]
T = TypeVar("T")


# --- where the engines deliberately differ (each is in the README) -----------------------------

DIFFERENCES = {
    # HAProxy sends a client to the backup (fallback) server only once health checks have taken
    # every real server down; connections refused by servers it holds up are retried on the
    # other real servers (redispatch), and then the client is turned away.
    "fallback_after_refusals": {"builtin"},
}


def does(engine: Engine, behaviour: str) -> bool:
    """Whether ``engine`` has ``behaviour``, one of the documented differences."""
    return engine.name in DIFFERENCES[behaviour]


# --- configuration documents ------------------------------------------------------------------


def real_server(label: str, address: tuple[str, int], **settings: Any) -> Document:
    ip, port = address
    return {"label": label, "ip": ip, "port": port, **settings}


def virtual_service(
    label: str,
    address: tuple[str, int],
    real_servers: list[Document],
    **settings: Any,
) -> Document:
    """A virtual service document; persistence none and no health check unless told."""
    ip, port = address
    settings.setdefault("persistence", {"mode": "none"})
    settings.setdefault("health_check", NO_CHECK)
    return {"label": label, "ip": ip, "ports": str(port), "real_servers": real_servers, **settings}


class Revisions:
    """Applies configuration documents to an engine as revisions 1, 2, 3..."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.revision = 0
        self.document: Document = {"virtual_services": []}
        self.config: Config | None = None
        self.plans: list[Plan] = []  # what the engine was given, newest last

    async def apply(self, *services: Document) -> int:
        """Apply a configuration of ``services`` as the controller does, planned from the
        revision applied before; returns its revision number."""
        document = {"virtual_services": copy.deepcopy(list(services))}
        config: Config = parse(document)
        revision = self.revision + 1
        plan = make(self.config, config, revision, self.revision if self.config else None)
        self.plans.append(plan)
        await self.engine.apply(plan)
        self.revision, self.document, self.config = revision, document, config
        return revision

    def service(self, label: str) -> Document:
        """A copy of the running document's virtual service ``label``, to change and apply."""
        for vs in self.document["virtual_services"]:
            if vs["label"] == label:
                return copy.deepcopy(vs)
        raise KeyError(label)


def https_check(port: int) -> Document:
    """The guide's health check (PSM's health page over HTTPS), quick."""
    return {"type": "https", "path": HEALTH_PATH, "expect": "PASS", "port": port, **FAST_CHECK}


# --- PSM stand-ins ------------------------------------------------------------------------------


@dataclass
class Psm:
    """A stand-in PSM server: an RDP-like echo service and an HTTPS health page on one IP."""

    service: EchoServer
    health: HealthEndpoint


@asynccontextmanager
async def psm_servers(
    net: Addresses, tls: ssl.SSLContext, *names: str
) -> AsyncIterator[tuple[list[Psm], int]]:
    """PSM stand-ins, each on its own address; their health pages share one port, as the
    check port of a virtual service is the same for every real server."""
    ips = [net.ip() for _ in names]
    health_port = common_port(ips)
    async with AsyncExitStack() as stack:
        servers = []
        for name, ip in zip(names, ips, strict=True):
            service = await stack.enter_async_context(EchoServer(name, ip))
            health = await stack.enter_async_context(HealthEndpoint(ip, tls, health_port))
            servers.append(Psm(service, health))
        yield servers, health_port


# --- status -------------------------------------------------------------------------------------


def service_status(status: EngineStatus, label: str) -> VirtualServiceStatus:
    for vs in status.virtual_services:
        if vs.label == label:
            return vs
    raise AssertionError(f"virtual service {label!r} is not in the status: {status}")


def server_status(status: EngineStatus, service: str, label: str) -> RealServerStatus:
    for rs in service_status(status, service).real_servers:
        if rs.label == label:
            return rs
    raise AssertionError(f"real server {label!r} of {service!r} is not in the status")


async def wait_for(
    predicate: Callable[[], bool | Awaitable[bool]], timeout: float = 10.0, what: str = ""
) -> None:
    """Poll ``predicate`` until it is true; fail the test if ``timeout`` seconds pass first."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"not true within {timeout}s: {what or predicate}")
        await asyncio.sleep(0.05)


async def settled(get: Callable[[], Awaitable[T]], expected: T, timeout: float = 10.0) -> T:
    """Poll ``get`` until it returns ``expected`` or ``timeout`` seconds pass; return the last
    value, for the caller to ``assert settled(...) == expected`` with pytest's diff."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await get()
        if value == expected or loop.time() > deadline:
            return value
        await asyncio.sleep(0.05)


async def wait_for_health(
    engine: Engine, service: str, label: str, health: str, timeout: float = 10.0
) -> RealServerStatus:
    """Wait until real server ``label`` shows ``health`` ("up" or "down"); return its status."""
    found: list[RealServerStatus] = []

    async def shows() -> bool:
        found[:] = [server_status(await engine.status(), service, label)]
        return found[0].health.value == health

    await wait_for(shows, timeout, f"{service}/{label} is {health}")
    return found[0]


# --- clients ------------------------------------------------------------------------------------


class Client:
    """One client connection through a virtual service to an echo backend.

    ``open`` sends a greeting and reads the backend's name, so ``name`` says where the
    connection landed; ``roundtrip`` proves it still relays both ways."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.name = ""

    @classmethod
    async def open(
        cls, address: tuple[str, int], source: str | None = None, greeting: bytes = b"hello\n"
    ) -> Client:
        async with asyncio.timeout(IO_TIMEOUT):
            reader, writer = await asyncio.open_connection(
                *address, local_addr=(source, 0) if source else None
            )
        client = cls(reader, writer)
        try:
            async with asyncio.timeout(IO_TIMEOUT):
                writer.write(greeting)
                client.name = (await reader.readline()).decode().strip()
                assert client.name, "the connection ended before the backend said its name"
                echo = await reader.readexactly(len(greeting))
            assert echo == greeting
        except BaseException:
            await client.close()
            raise
        return client

    async def roundtrip(self, data: bytes) -> None:
        """Send ``data`` and read it back from the echo backend."""
        async with asyncio.timeout(IO_TIMEOUT):
            self.writer.write(data)
            echo = await self.reader.readexactly(len(data))
        assert echo == data, "the echo came back changed"

    async def finish(self) -> bytes:
        """Half-close, then read to the end: what the backend still had to say."""
        async with asyncio.timeout(IO_TIMEOUT):
            self.writer.write_eof()
            rest = await self.reader.read()
        await self.close()
        return rest

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, TimeoutError):
            async with asyncio.timeout(IO_TIMEOUT):
                await self.writer.wait_closed()


async def landing(address: tuple[str, int], source: str | None = None) -> str:
    """Connect, learn which backend the connection landed on, disconnect."""
    client = await Client.open(address, source)
    await client.close()
    return client.name


async def refused(address: tuple[str, int], source: str | None = None) -> bool:
    """Whether a new connection is turned away — refused, reset or closed without an answer —
    rather than served. Fails the test if it neither ends nor is served within 2 seconds."""
    try:
        async with asyncio.timeout(2.0):
            reader, writer = await asyncio.open_connection(
                *address, local_addr=(source, 0) if source else None
            )
            try:
                writer.write(b"hello\n")
                answer = await reader.readline()
            finally:
                writer.close()
                with contextlib.suppress(ConnectionError):
                    await writer.wait_closed()
    except ConnectionError:
        return True
    except TimeoutError:
        raise AssertionError(
            f"a connection to {address} hung: neither served nor refused"
        ) from None
    return answer == b""
