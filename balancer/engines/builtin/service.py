"""A virtual service as the engine runs it: its real servers' live state, the scheduler and the
persistence table, and the choice of a real server for each new client."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Mapping, Sequence

from balancer.engines.builtin.balancing import Scheduler, scheduler
from balancer.engines.builtin.persistence import StickTable
from balancer.model import Endpoint, PersistenceMode, RealServer, RealServerState, VirtualService
from balancer.model.types import format_ports
from balancer.plan import ServiceChange
from balancer.state import Counters, Health, RealServerStatus, VirtualServiceStatus

ONLINE = RealServerState.ONLINE
DRAIN = RealServerState.DRAIN


class RunningServer:
    """A real server's live state: what the operator asked, what health found, the counters."""

    __slots__ = (
        "active",
        "bytes_in",
        "bytes_out",
        "config",
        "family",
        "health",
        "host",
        "label",
        "reason",
        "since",
        "total",
    )

    def __init__(self, config: RealServer) -> None:
        self.config = config
        self.label = config.label
        # A connection's target; a server's address is never changed in place (see reconfigure).
        self.host = str(config.ip)
        self.family = socket.AF_INET6 if config.ip.version == 6 else socket.AF_INET
        # Up until a check says otherwise, as HAProxy does; the first failed check takes it out.
        self.health = Health.UP
        self.reason = "not checked yet"
        self.since = time.time()
        self.active = 0
        self.total = 0
        self.bytes_in = 0
        self.bytes_out = 0

    @property
    def weight(self) -> int:
        return self.config.weight

    def has_room(self) -> bool:
        limit = self.config.max_connections
        return not limit or self.active < limit

    def accepts_new(self) -> bool:
        """Whether it takes new clients, room apart (the relay core counts room itself)."""
        config = self.config
        return config.state is ONLINE and config.weight > 0 and self.health is Health.UP

    def accepts_persistent(self) -> bool:
        """Drain and weight 0 turn new clients away but keep the ones that were stuck here;
        room apart."""
        return self.config.state in (ONLINE, DRAIN) and self.health is Health.UP

    def takes_new(self) -> bool:
        return self.accepts_new() and self.has_room()

    def takes_persistent(self) -> bool:
        return self.accepts_persistent() and self.has_room()

    def status(self, last_check: tuple[str, float | None] | None = None) -> RealServerStatus:
        """``last_check``: the latest check's reason, which may be newer than the last flip's,
        and the seconds it took."""
        reason, took = last_check or (self.reason, None)
        return RealServerStatus(
            label=self.label,
            ip=str(self.config.ip),
            port=self.config.port,
            weight=self.config.weight,
            state=self.config.state.value,
            health=self.health,
            reason=reason or self.reason,
            since=self.since,
            counters=Counters(
                active=self.active,
                total=self.total,
                bytes_in=self.bytes_in,
                bytes_out=self.bytes_out,
            ),
            check_seconds=took,
        )


def fallback_server(endpoint: Endpoint) -> RunningServer:
    return RunningServer(RealServer(label="fallback", ip=endpoint.ip, port=endpoint.port))


class RunningService:
    __slots__ = (
        "active",
        "bytes_in",
        "bytes_out",
        "config",
        "fallback",
        "label",
        "scheduler",
        "servers",
        "table",
        "total",
    )

    def __init__(self, config: VirtualService, clock: Callable[[], float]) -> None:
        self.label = config.label
        self.config = config
        self.servers = {rs.label: RunningServer(rs) for rs in config.real_servers}
        self.scheduler: Scheduler = scheduler(config.balancing)
        self.table: StickTable | None = None
        self.fallback = fallback_server(config.fallback) if config.fallback else None
        self.active = 0
        self.total = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self._reconfigure_persistence(config, clock)

    def reconfigure(self, change: ServiceChange, clock: Callable[[], float]) -> None:
        """Do what the plan says of this service, keeping the live state of every real server
        whose address is unchanged (whether its health still holds is ``change.rechecked``)."""
        config = change.after
        previous, self.servers = self.servers, {}
        for rs in config.real_servers:
            running = previous.get(rs.label)
            if running is None or rs.label in change.readdressed:
                running = RunningServer(rs)
            running.config = rs
            self.servers[rs.label] = running
        if "balancing" in change.fields:
            self.scheduler = scheduler(config.balancing)
        if "persistence" in change.fields:
            self._reconfigure_persistence(config, clock)
        if "fallback" in change.fields:
            self.fallback = fallback_server(config.fallback) if config.fallback else None
        self.config = config

    def _reconfigure_persistence(self, config: VirtualService, clock: Callable[[], float]) -> None:
        persistence = config.persistence
        if persistence.mode is PersistenceMode.NONE:
            self.table = None
        elif self.table is None:
            self.table = StickTable(persistence.timeout, persistence.table_size, clock)
        else:
            self.table.timeout = persistence.timeout
            self.table.size = persistence.table_size

    def choose(self, client: str, tried: Sequence[RunningServer]) -> RunningServer | None:
        """The real server for a new connection from ``client``, skipping ``tried`` ones."""
        table = self.table
        if table is not None:
            label = table.lookup(client)
            if label is not None:
                stuck = self.servers.get(label)
                if stuck is not None and stuck not in tried and stuck.takes_persistent():
                    table.stick(client, label)
                    return stuck
        candidates = [s for s in self.servers.values() if s.takes_new() and s not in tried]
        chosen = self.scheduler.pick(candidates)
        if chosen is not None and table is not None:
            table.stick(client, chosen.label)
        return chosen

    def connected(self, client: str, server: RunningServer) -> None:
        """A connection of ``client`` reached ``server``; it holds the client's entry."""
        if self.table is not None and server is not self.fallback:
            self.table.hold(client)

    def finished(self, client: str, server: RunningServer) -> None:
        """A connection ended: the client is remembered for the timeout from now."""
        table = self.table
        if table is not None and server is not self.fallback:
            table.release(client, server.label if server.label in self.servers else None)

    def status(self, last_checks: Mapping[str, tuple[str, float | None]]) -> VirtualServiceStatus:
        """``last_checks``: the latest check's reason and seconds of each real server, by label."""
        return VirtualServiceStatus(
            label=self.label,
            ip=str(self.config.ip),
            ports=format_ports(self.config.ports),
            counters=Counters(
                active=self.active,
                total=self.total,
                bytes_in=self.bytes_in,
                bytes_out=self.bytes_out,
            ),
            fallback_connections=self.fallback.active if self.fallback else 0,
            real_servers=tuple(
                s.status(last_checks.get(label)) for label, s in self.servers.items()
            ),
        )
