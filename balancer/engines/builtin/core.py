"""The compiled relay core's Python side (``balancer._relay``, source in ``core/``).

The core runs one epoll loop in a thread of its own, without the interpreter lock, so a new
connection never waits behind health checks, API requests or the garbage collector. Python
keeps the policy: it writes each service's table into the core (its real servers, what each
takes now, the weighted round-robin order as an array) whenever a commit or a health verdict
changes it, and the loop only reads it. A table and not a call per connection: a call would
take the interpreter lock for every client. What the core reports (a real server it could not
reach, a client refused, an idle connection closed) arrives in batches, on an eventfd this
process's asyncio loop reads; its counters are read when status is asked.

Which relay runs: the core when it imports and passes its self-test, else the Python relay
(``relay``); ``BALANCER_RELAY=python|core`` forces one, and a forced core that cannot run is a
fault of the engine, never a silent fallback.

Source-IP persistence: the core keeps its own table for the hot path, as big as the service's
``StickTable``, and reports each use (stick, hold, release) and each entry it let go to make
room (evict), which Python applies to that table exactly as the Python relay would; that table
stays the one that is listed, journaled and replicated, and
what only Python learns (the peer's entries, a clear) is written into the core's.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import importlib
import logging
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from balancer.engines.builtin.balancing import RoundRobin
from balancer.engines.builtin.service import RunningServer, RunningService
from balancer.model import PersistenceMode

log = logging.getLogger("balancer.engine")

NONE = PersistenceMode.NONE
VERSION = 2  # the C side's RELAY_VERSION this module speaks to
ENVIRONMENT = "BALANCER_RELAY"
# The round-robin order is this long at most: weights summing to more are scaled down to it.
ORDER_MAX = 10_000
SELF_TEST_TIMEOUT = 2.0


class CoreFault(Exception):
    """BALANCER_RELAY=core, and the core cannot run: the engine does not start."""


def choose() -> tuple[ModuleType | None, str]:
    """The compiled core's module, or None for the Python relay; and the relay as ``balancer
    status`` says it. CoreFault if the core is forced and cannot run."""
    forced = os.environ.get(ENVIRONMENT, "")
    if forced == "python":
        return None, f"Python ({ENVIRONMENT}=python)"
    if forced not in ("", "core"):
        raise CoreFault(f"{ENVIRONMENT}: {forced!r} is neither python nor core")
    try:
        module = importlib.import_module("balancer._relay")
        if module.VERSION != VERSION:
            raise ImportError(f"it is version {module.VERSION}, not {VERSION}: `make setup`")
        self_test(module)
    except (ImportError, OSError, AssertionError) as error:
        why = f"the compiled core cannot run: {error}"
        if forced:
            raise CoreFault(f"{ENVIRONMENT}=core: {why}") from None
        return None, f"Python ({why})"
    return module, "compiled core"


def self_test(module: Any) -> None:
    """Relay a few bytes each way through a core of its own on loopback; AssertionError or
    OSError if they do not come through."""
    core = module.core()
    with contextlib.ExitStack() as stack:
        backend = stack.enter_context(socket.create_server(("127.0.0.1", 0)))
        front = stack.enter_context(socket.create_server(("127.0.0.1", 0)))
        backend.settimeout(SELF_TEST_TIMEOUT)
        service = module.service(0)
        server = module.server(0, socket.AF_INET, socket.inet_aton("127.0.0.1"),
                               backend.getsockname()[1])  # fmt: skip
        module.set_server(server, module.TAKES_NEW, 1, 0)
        module.set_table(core, service, (server,), (0,), False, None, 1, 2000, 5000, 0, 0)
        module.listen(core, front.fileno(), 0, front.getsockname()[1], service)
        module.start(core)
        stack.callback(module.stop, core)
        client = stack.enter_context(
            socket.create_connection(front.getsockname(), timeout=SELF_TEST_TIMEOUT)
        )
        client.sendall(b"ping")
        accepted = stack.enter_context(backend.accept()[0])
        accepted.settimeout(SELF_TEST_TIMEOUT)
        assert accepted.recv(4) == b"ping", "the client's bytes did not reach the server"
        accepted.sendall(b"pong")
        assert client.recv(4) == b"pong", "the server's bytes did not reach the client"


@dataclass(slots=True)
class _Counted:
    """A service's or server's handle in the core, and its counters as last added to Python's."""

    handle: Any
    seen: tuple[int, int, int, int] = (0, 0, 0, 0)


class CoreRelay:
    """The core of one process (an engine, or one of its workers)."""

    def __init__(self, module: ModuleType, loop: asyncio.AbstractEventLoop) -> None:
        self.module = module
        self.loop = loop
        self.core = module.core()
        self._ids = 0
        self._services: dict[RunningService, _Counted] = {}
        self._servers: dict[RunningServer, _Counted] = {}
        self._by_id: dict[int, tuple[RunningService | RunningServer, str]] = {}
        # Each service's order and the weights it was made of: made again only when they change.
        self._orders: dict[RunningService, tuple[tuple[int, ...], tuple[int, ...]]] = {}
        module.start(self.core)
        loop.add_reader(module.events_fd(self.core), self.flush)

    def _id(self) -> int:
        self._ids += 1
        return self._ids

    def listen(self, sock: socket.socket, port: int, service: RunningService) -> int:
        """Relay the clients ``sock`` accepts to ``service``; the listener's id."""
        listener = self._id()
        self.module.listen(self.core, sock.fileno(), listener, port, self._service(service))
        return listener

    def relisten(self, listener: int, service: RunningService | None) -> None:
        """The listener's clients go to ``service`` from now; None: it accepts no more."""
        handle = None if service is None else self._service(service)
        self.module.relisten(self.core, listener, handle)

    def _service(self, service: RunningService) -> Any:
        counted = self._services.get(service)
        if counted is None:
            ident = self._id()
            counted = self._services[service] = _Counted(self.module.service(ident))
            self._by_id[ident] = (service, service.label)
            self._table(service)
        return counted.handle

    def _server(self, service: RunningService, server: RunningServer) -> Any:
        counted = self._servers.get(server)
        if counted is None:
            ident = self._id()
            family = server.family
            packed = socket.inet_pton(family, server.host)
            port = server.config.port or 0  # 0: the port the client came to
            counted = _Counted(self.module.server(ident, family, packed, port))
            self._servers[server] = counted
            self._by_id[ident] = (server, service.label)
        self._takes(server, counted.handle)
        return counted.handle

    def _takes(self, server: RunningServer, handle: Any) -> None:
        module = self.module
        taking = module.TAKES_NONE  # room apart: the core counts it itself
        if server.accepts_new():
            taking = module.TAKES_NEW
        elif server.accepts_persistent():
            taking = module.TAKES_STUCK
        module.set_server(handle, taking, server.config.weight, server.config.max_connections)

    def health(self, server: RunningServer) -> None:
        """``server``'s health has changed: whether it takes new clients, at once."""
        counted = self._servers.get(server)
        if counted is not None:
            self._takes(server, counted.handle)

    def sync(self, services: Iterable[RunningService]) -> None:
        """Write every running service's table anew (after a commit or a health verdict);
        forget those no longer running once their connections have been counted."""
        running = set(services)
        for service in running & self._services.keys():
            self._table(service)
        self.count(running)
        for service in self._services.keys() - running:
            del self._services[service]
            self._orders.pop(service, None)
        live = {server for service in running for server in (*service.servers.values(),
                service.fallback) if server is not None}  # fmt: skip
        for server in self._servers.keys() - live:
            del self._servers[server]
        self._by_id = {
            ident: (thing, label)
            for ident, (thing, label) in self._by_id.items()
            if thing in self._services or thing in self._servers
        }

    def _table(self, service: RunningService) -> None:
        config = service.config
        persistence = config.persistence
        servers = list(service.servers.values())
        handles = tuple(self._server(service, server) for server in servers)
        fallback = service.fallback
        weights = tuple(server.config.weight for server in servers)
        made = self._orders.get(service)
        if made is None or made[0] != weights:
            made = self._orders[service] = (weights, order(servers))
        self.module.set_table(
            self.core,
            self._services[service].handle,
            handles,
            made[1],
            config.balancing == "least_connections",
            None if fallback is None else self._server(service, fallback),
            config.retries,
            round(config.connect_timeout * 1000),
            round(min(config.client_timeout, config.server_timeout) * 1000),
            round(persistence.timeout * 1000) if persistence.mode is not NONE else 0,
            persistence.table_size if persistence.mode is not NONE else 0,
        )

    def count(self, services: Iterable[RunningService]) -> None:
        """Add what the core counted since the last time to Python's counters, which status
        reads (a service may have run on the Python relay before: both are kept)."""
        counter = self.module.counters
        for service in services:
            counted = self._services.get(service)
            if counted is not None:
                _add(service, counted, counter(counted.handle))
            for server in (*service.servers.values(), service.fallback):
                counted = self._servers.get(server) if server is not None else None
                if server is not None and counted is not None:
                    _add(server, counted, counter(counted.handle))

    def flush(self) -> None:
        """Apply and log what the core has reported. It wakes this process at most every
        20 ms; what reads the persistence tables flushes first, so they are up to date."""
        events, lost = self.module.events(self.core)
        for kind, service_id, server_id, port, client, error in events:
            service, label = self._by_id.get(service_id, (None, "?"))
            server = self._by_id.get(server_id, (None, ""))[0]
            table = service.table if isinstance(service, RunningService) else None
            if table is not None and isinstance(server, RunningServer):
                # The core's persistence table, mirrored into the one that lists, journals
                # and replicates it, as the Python relay's choose/connected/finished do.
                if kind == self.module.STICK:
                    table.stick(client, server.label)
                    continue
                if kind == self.module.HOLD:
                    table.hold(client)
                    continue
                if kind == self.module.EVICT:
                    # The core's table, as big as this one, let its least recently used go.
                    table.evict(client)
                    continue
                if kind == self.module.RELEASE:
                    assert isinstance(service, RunningService)
                    known = server.label in service.servers
                    table.release(client, server.label if known else None)
                    continue
            if kind == self.module.UNREACHABLE and isinstance(server, RunningServer):
                why = "connect timeout" if error == errno.ETIMEDOUT else os.strerror(error)
                log.info(
                    "%s: cannot reach real server %s at %s:%s for %s: %s",
                    label, server.label, server.host, port, client, why,
                )  # fmt: skip
            elif kind == self.module.REFUSED:
                log.info("%s: no real server for %s, connection refused", label, client)
            elif kind == self.module.IDLE and isinstance(service, RunningService):
                config = service.config
                interval = min(config.client_timeout, config.server_timeout)
                log.info("%s: %s idle for %ss, closed", label, client, interval)
        if lost:
            log.info("the relay core had %s more events than it keeps; not logged", lost)

    def expire(self, service: RunningService) -> None:
        """Drop the core's entries of ``service`` that have expired (it looks at their age on
        the hot path; this bounds their number)."""
        counted = self._services.get(service)
        persistence = service.config.persistence
        if counted is not None and persistence.mode is not NONE:
            timeout = round(persistence.timeout * 1000)
            self.module.expire(self.core, counted.handle, timeout)

    def learn(self, service: RunningService, client: str, server: str, age: float) -> None:
        """The peer's entry, which ``service``'s table took."""
        counted, running = self._services.get(service), service.servers.get(server)
        handle = self._servers.get(running) if running is not None else None
        if counted is not None and handle is not None:
            packed = _packed(client)
            self.module.learn(self.core, counted.handle, packed, handle.handle, round(age * 1000))

    def drop(self, service: RunningService, client: str) -> None:
        """The peer's drop of ``client``'s entry, which ``service``'s table took."""
        counted = self._services.get(service)
        if counted is not None:
            self.module.drop(self.core, counted.handle, _packed(client))

    def forget(self, service: RunningService, age: float) -> None:
        """Drop ``service``'s entries used before ``age`` seconds ago (0: all)."""
        counted = self._services.get(service)
        if counted is not None:
            self.module.forget(self.core, counted.handle, round(age * 1000))

    def close(self) -> None:
        """Stop the loop thread; the connections it relays close with it."""
        self.loop.remove_reader(self.module.events_fd(self.core))
        self.module.stop(self.core)


def _packed(client: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6 if ":" in client else socket.AF_INET, client)


def _add(thing: RunningService | RunningServer, counted: _Counted, now: tuple[int, ...]) -> None:
    before = counted.seen
    thing.active += now[0] - before[0]
    thing.total += now[1] - before[1]
    thing.bytes_in += now[2] - before[2]
    thing.bytes_out += now[3] - before[3]
    counted.seen = (now[0], now[1], now[2], now[3])


def order(servers: list[RunningServer]) -> tuple[int, ...]:
    """The smooth weighted round robin's sequence over ``servers`` (indexes), as
    ``balancing.RoundRobin`` picks: one turn of every weight. The core walks it, skipping the
    servers that take no new client now, so a drain or a health flip needs no new order."""
    weights = [server.config.weight for server in servers]
    total = sum(weights)
    if total > ORDER_MAX:
        weights = [max(1, w * ORDER_MAX // total) if w else 0 for w in weights]
        total = sum(weights)
    entries = [_Weighted(i, w) for i, w in enumerate(weights) if w > 0]
    robin = RoundRobin()
    picks = (robin.pick(entries) for _ in range(total))
    return tuple(entry.index for entry in picks if entry is not None)


@dataclass(slots=True, eq=False)
class _Weighted:
    """A server as the round robin sees it, for ``order``."""

    index: int
    weight: int
    active: int = 0
