"""The built-in data plane: listeners, running services and health monitors, and how a new
configuration replaces the old one without dropping a connection."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from balancer.engines.builtin import core
from balancer.engines.builtin.listeners import listen
from balancer.engines.builtin.persistence import Change
from balancer.engines.builtin.relay import ClientSide
from balancer.engines.builtin.service import RunningServer, RunningService
from balancer.engines.builtin.timeouts import Timeouts
from balancer.health.monitor import Monitor, Pace
from balancer.health.probes import Outcome
from balancer.health.verdict import Verdict
from balancer.model import Config, VirtualService
from balancer.model.types import each_port
from balancer.plan import Plan
from balancer.state import EngineStatus, Health

log = logging.getLogger("balancer.engine")

SWEEP_INTERVAL = 10.0
# An open connection's entry is renewed this long before it would expire: the renewal then
# reaches the peer before the peer's copy expires.
RENEW_AHEAD = 2 * SWEEP_INTERVAL


class ApplyError(Exception):
    """A configuration the data plane cannot run; what runs is unchanged."""


Key = tuple[str, int]  # a listening address: (VIP, port)


def wanted_listeners(services: Iterable[VirtualService]) -> dict[tuple[str, int], VirtualService]:
    """Every (VIP, port) that ``services`` listen on, and its virtual service."""
    return {(str(vs.ip), port): vs for vs in services for port in each_port(vs.ports)}


def listeners_of(plan: Plan) -> tuple[dict[Key, VirtualService], set[Key]]:
    """The listeners ``plan`` adds or points at a changed service, and those it closes: a
    key may move from one service to another in the same plan."""
    wanted = wanted_listeners([*plan.added, *(c.after for c in plan.changed)])
    before = wanted_listeners([*plan.removed, *(c.before for c in plan.changed)])
    return wanted, before.keys() - wanted.keys()


def bind(
    keys: list[tuple[str, int]],
    wanted: dict[tuple[str, int], VirtualService],
    sockets: Callable[[str, int], list[socket.socket]],
) -> dict[tuple[str, int], list[socket.socket]]:
    """``sockets(ip, port)`` for every key, or none at all: ApplyError names the port that
    cannot be had, and what was bound before it is closed."""
    bound: dict[tuple[str, int], list[socket.socket]] = {}
    try:
        for ip, port in keys:
            bound[(ip, port)] = sockets(ip, port)
    except OSError as error:
        for group in bound.values():
            for sock in group:
                sock.close()
        vs = wanted[(ip, port)]
        why = os.strerror(error.errno) if error.errno else str(error)
        if error.errno == errno.EACCES and port < 1024:
            why += " (ports below 1024 need root)"
        raise ApplyError(
            f"virtual_services[{vs.label}].ports: cannot listen on {ip}:{port}: {why}"
        ) from None
    return bound


@dataclass(slots=True)
class Listener:
    """One listening socket; ``service`` is swapped by a commit, the socket is kept. It is
    served by the Python relay (``server``) or by the compiled core (``sock`` and its id in
    the core, ``core``)."""

    service: RunningService
    server: asyncio.Server | None = None
    sock: socket.socket | None = None
    core: int | None = None


class DataPlane:
    """``serve``: listen and relay; ``checks``: run the health monitors. A single engine
    process does both; with workers, the supervisor only checks (``on_health`` tells it of each
    flip) and each worker only serves, on sockets it is given, with health it is told."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        *,
        serve: bool = True,
        checks: bool = True,
        on_health: Callable[[], None] | None = None,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.clock = clock
        self.serve = serve
        self.checks = checks
        self.on_health = on_health
        self.services: dict[str, RunningService] = {}
        self.listeners: dict[tuple[str, int], Listener] = {}
        self.monitors: dict[str, dict[str, Monitor]] = {}  # by service, then real server
        self.pace = Pace()
        self.revision: int | None = None
        self.started = time.time()
        self.timeouts = Timeouts(self.loop)
        self.journaling = False  # the persistence tables' changes, for replication
        self._applying = asyncio.Lock()
        self._sweeper = self.loop.create_task(self._sweep())
        # The relay: the compiled core where it runs (``core``), else the Python relay.
        self.core: core.CoreRelay | None = None
        self.relay: str | None = None
        if serve:
            module, self.relay = core.choose()
            if module is not None:
                self.core = core.CoreRelay(module, self.loop)
            log.info("relay: %s", self.relay, extra={"event": "relay", "relay": self.relay})

    def running(self) -> dict[str, VirtualService]:
        """The configuration of every running service, by label: what a plan starts from."""
        return {label: service.config for label, service in self.services.items()}

    async def apply(self, plan: Plan, sockets: dict[Key, socket.socket] | None = None) -> None:
        """Do what ``plan`` says. New sockets are bound first, so a port that cannot be had
        rejects the whole revision before anything that runs is touched. A worker is given its
        ``sockets`` instead (the supervisor has bound them)."""
        async with self._applying:
            wanted, gone = listeners_of(plan) if self.serve else ({}, set())
            new = [key for key in wanted if key not in self.listeners]
            if sockets is None:
                bound = self._bind(new, wanted)
            else:
                bound = {key: sockets.pop(key) for key in new}
                for extra in sockets.values():  # already listening on these
                    extra.close()
            # The new table of services is built whole and swapped in at once, so a status
            # request in the middle of an apply sees the old revision or the new, never a mix.
            services = dict(self.services)
            for vs in plan.removed:
                del services[vs.label]
            fresh: dict[str, Iterable[str]] = {}
            for vs in plan.added:
                services[vs.label] = RunningService(vs, self.clock)
                fresh[vs.label] = [rs.label for rs in vs.real_servers]
            for change in plan.changed:
                services[change.label].reconfigure(change, self.clock)
                fresh[change.label] = change.rechecked
            self.services = services
            if self.core is not None:
                self.core.sync(services.values())
            if self.journaling:  # a table new in this revision
                await self.journal(True)
            await self._listen(wanted, gone, bound)
            for vs in plan.removed:
                await self._unwatch(vs.label, set())
            for label, labels in fresh.items():
                await self._watch(services[label], labels)
            self.revision = plan.revision
        # A worker's revision is its supervisor's, which says so once for all.
        log.log(
            logging.INFO if self.checks else logging.DEBUG,
            "revision %s applied",
            plan.revision,
            extra={"event": "apply", "revision": plan.revision},
        )

    async def _listen(
        self, wanted: dict[Key, VirtualService], gone: set[Key], bound: dict[Key, socket.socket]
    ) -> None:
        for key, vs in wanted.items():
            service = self.services[vs.label]
            listener = self.listeners.get(key)
            if listener is None:
                listener = self.listeners[key] = Listener(service)
                await self._serve(listener, key[1], bound[key])
            elif listener.core is not None and self.core is not None:
                self.core.relisten(listener.core, service)
            listener.service = service
        for key in gone:
            closing = self.listeners.pop(key, None)
            if closing is not None:
                self._unserve(closing)

    async def _serve(self, listener: Listener, port: int, sock: socket.socket) -> None:
        if self.core is not None:
            listener.sock = sock
            listener.core = self.core.listen(sock, port, listener.service)
            return
        listener.server = await self.loop.create_server(
            lambda listener=listener: ClientSide(  # type: ignore[misc]
                listener.service, self.timeouts, port
            ),
            sock=sock,
        )

    def _unserve(self, listener: Listener) -> None:
        """Stop accepting on ``listener``; connections already relayed carry on."""
        if listener.core is not None and self.core is not None:
            self.core.relisten(listener.core, None)
        if listener.sock is not None:
            listener.sock.close()
        if listener.server is not None:
            listener.server.close()

    def _bind(self, keys: list[Key], wanted: dict[Key, VirtualService]) -> dict[Key, socket.socket]:
        return {key: group[0] for key, group in bind(keys, wanted, self._listen_one).items()}

    @staticmethod
    def _listen_one(ip: str, port: int) -> list[socket.socket]:
        return [listen(ip, port)]

    async def _watch(self, service: RunningService, fresh: Iterable[str]) -> None:
        """Start health monitors for new or changed real servers; stop those of removed ones."""
        await self._unwatch(service.label, set(service.servers) - set(fresh))
        if not self.checks:
            return
        vs = service.config
        vip = str(vs.ip)  # once: an address is slow to write out, and 10,000 servers add up
        for label in fresh:
            running = service.servers[label]
            running.health, running.reason, running.since = (
                Health.UP,
                "not checked yet",
                time.time(),
            )
            monitor = Monitor(
                vs.health_check,
                running.host,
                vs.service_port(running.config),
                self._on_change(service, running),
                vip_ip=vip,
                vip_port=vs.first_port,
                pace=self.pace,
            )
            self.monitors.setdefault(service.label, {})[label] = monitor
            monitor.start()

    async def _unwatch(self, service: str, keep: set[str]) -> None:
        monitors = self.monitors.get(service, {})
        for label in [label for label in monitors if label not in keep]:
            await monitors.pop(label).stop()
        if not monitors:
            self.monitors.pop(service, None)

    def _on_change(
        self, service: RunningService, running: RunningServer
    ) -> Callable[[Verdict, Outcome], None]:
        def changed(verdict: Verdict, outcome: Outcome) -> None:
            running.health = Health.UP if verdict.up else Health.DOWN
            running.reason = outcome.reason
            running.since = time.time()
            if self.core is not None:
                self.core.health(running)
            log.log(
                logging.INFO if verdict.up else logging.WARNING,
                "%s: real server %s is %s: %s",
                service.label,
                running.label,
                running.health.value.upper(),
                outcome.reason,
                extra={
                    "event": "health",
                    "service": service.label,
                    "server": running.label,
                    "health": running.health.value,
                    "reason": outcome.reason,
                },
            )
            if self.on_health is not None:
                self.on_health()

        return changed

    def health(self) -> dict[str, dict[str, bool]]:
        """Whether each real server is up, by service and label: what workers are told."""
        return {
            label: {rs: running.health is Health.UP for rs, running in service.servers.items()}
            for label, service in self.services.items()
        }

    def set_health(self, states: dict[str, dict[str, bool]]) -> None:
        """Take the health found by the supervisor's checks (a worker runs none of its own)."""
        for label, servers in states.items():
            service = self.services.get(label)
            for rs, up in servers.items():
                running = service.servers.get(rs) if service is not None else None
                if running is not None:
                    running.health = Health.UP if up else Health.DOWN
                    if self.core is not None:
                        self.core.health(running)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            for service in self.services.values():
                if service.table is not None:
                    service.table.sweep(RENEW_AHEAD)
                    if self.core is not None:
                        self.core.expire(service)

    async def status(self) -> EngineStatus:
        if self.core is not None:
            self.core.count(self.services.values())
        last_checks: dict[str, dict[str, tuple[str, float | None]]] = {}
        for service, monitors in self.monitors.items():
            for server, monitor in monitors.items():
                if monitor.last is not None:
                    last = (monitor.last.reason, monitor.took)
                    last_checks.setdefault(service, {})[server] = last
        services = [s.status(last_checks.get(s.label, {})) for s in self.services.values()]
        return EngineStatus(
            engine="builtin",
            pid=os.getpid(),
            started=self.started,
            revision=self.revision,
            virtual_services=tuple(services),
            relay=self.relay,
        )

    async def configuration(self) -> str:
        running = Config(virtual_services=tuple(s.config for s in self.services.values()))
        return f"# revision {self.revision}\n{running.model_dump_json(indent=2)}\n"

    def _mirrored(self) -> None:
        """The persistence tables with every use the core has reported (it batches them)."""
        if self.core is not None:
            self.core.flush()

    async def persistence(self, service: str) -> list[dict[str, Any]]:
        self._mirrored()
        table = self.service(service).table
        if table is None:
            return []
        return [
            {"client": client, "server": server, "expires_in": round(left, 1)}
            for client, server, left in table.entries()
        ]

    async def clear_persistence(self, service: str) -> int:
        running = self.service(service)
        if running.table is None:
            return 0
        self._mirrored()
        if self.core is not None:
            self.core.forget(running, 0.0)
        return running.table.forget()

    # --- persistence replication: the tables as ``replication.Tables`` ---

    async def journal(self, on: bool) -> None:
        self.journaling = on
        for service in self.services.values():
            if service.table is not None:
                service.table.journal(on)

    async def drain(self) -> list[Change]:
        self._mirrored()
        return [
            change
            for label, service in self.services.items()
            if service.table is not None
            for change in service.table.drain(label)
        ]

    async def dump(self) -> list[Change]:
        self._mirrored()
        return [
            change
            for label, service in self.services.items()
            if service.table is not None
            for change in service.table.dump(label)
        ]

    async def learn(self, changes: list[Change]) -> None:
        refused = 0
        services = self.services
        for label, client, server, age in changes:
            service = services.get(label)
            table = service.table if service is not None else None
            if service is None or table is None:
                refused += 1
            elif client is None:
                table.clear(age, journaled=False)
                if self.core is not None:
                    self.core.forget(service, age)
            elif server is None:
                if table.unlearn(client, age) and self.core is not None:
                    self.core.drop(service, client)
            elif server in service.servers:
                if table.learn(client, server, age) and self.core is not None:
                    self.core.learn(service, client, server, age)
            else:  # the peer runs a server this node does not: the entry would mislead
                refused += 1
        if refused:
            log.debug("%s persistence entries from the peer name nothing running here", refused)

    async def entries(self) -> dict[str, int]:
        self._mirrored()
        return {
            label: len(service.table)
            for label, service in self.services.items()
            if service.table is not None
        }

    async def workers_status(self) -> list[dict[str, Any]]:
        """One process: itself the only worker."""
        status = (await self.status()).model_dump(mode="json")
        return [{"index": 0, "pid": os.getpid(), "status": status}]

    def service(self, label: str) -> RunningService:
        try:
            return self.services[label]
        except KeyError:
            raise ApplyError(f"virtual service {label!r} is not running") from None

    async def close(self) -> None:
        self._sweeper.cancel()
        self.timeouts.close()
        for listener in self.listeners.values():
            self._unserve(listener)
        self.listeners.clear()
        if self.core is not None:
            self.core.close()
        for monitors in self.monitors.values():
            for monitor in monitors.values():
                await monitor.stop()
        self.monitors.clear()
