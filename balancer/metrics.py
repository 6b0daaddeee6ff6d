"""What ``GET /metrics`` tells Prometheus: one scrape's snapshot as metric families.

Everything is read when Prometheus asks, from what already counts it (the engine's status, the
node's figures, the pair's view, the controller's commits): nothing samples in between, and no
metric lives in a process-wide registry. Where HAProxy's own exporter has a metric that means
the same thing, it has that name and its labels (``proxy``, ``server``), so dashboards made for
HAProxy work on either engine; the rest are ``balancer_*``.

Only the route's module imports this one: the ``balancer`` command never loads
prometheus_client.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.openmetrics.exposition import generate_latest
from prometheus_client.registry import CollectorRegistry

from balancer.controller import Commits
from balancer.pair.status import PairView
from balancer.state import EngineStatus, Health, ReplicationStatus
from balancer.system import SystemFigures

# HAProxy's server states (its exporter's ``state`` label), one of which is 1 for each server.
SERVER_STATES = ("UP", "DOWN", "MAINT", "DRAIN")
HA_STATES = ("active", "passive", "fault", "unknown")
SERVER = ("proxy", "server")


@dataclass(frozen=True, slots=True)
class Scrape:
    """What one scrape reads: the engine's status (None with ``engine_error`` when it cannot
    be read), the node's figures, the pair as this node sees it (None standalone), and the
    commits."""

    engine: EngineStatus | None
    engine_error: str | None
    figures: SystemFigures
    pair: PairView | None
    commits: Commits


class Collector:
    """A collector for one scrape (prometheus_client's Collector protocol)."""

    def __init__(self, scrape: Scrape) -> None:
        self.scrape = scrape

    def collect(self) -> Iterator[Metric]:
        yield from _engine(self.scrape.engine, self.scrape.engine_error)
        yield from _node(self.scrape.figures)
        yield from _pair(self.scrape.pair)
        yield from _commits(self.scrape.commits)


def exposition(scrape: Scrape) -> bytes:
    """The OpenMetrics text of ``scrape``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector(scrape))
    text: bytes = generate_latest(registry)  # type: ignore[no-untyped-call]  # untyped there
    return text


def server_state(state: str, health: Health) -> str:
    """HAProxy's word for a real server: an operator's halt is MAINT, a drain DRAIN, else its
    health."""
    if state == "halt":
        return "MAINT"
    if state == "drain":
        return "DRAIN"
    return "UP" if health is Health.UP else "DOWN"


def _engine(status: EngineStatus | None, error: str | None) -> Iterator[Metric]:
    up = GaugeMetricFamily(
        "balancer_engine_up", "1 while the engine runs the applied revision and answers"
    )
    up.add_metric([], 1 if status is not None and error is None else 0)
    yield up
    revision = GaugeMetricFamily("balancer_engine_revision", "The revision the engine runs")
    if status is not None and status.revision is not None:
        revision.add_metric([], status.revision)
    yield revision
    services = () if status is None else status.virtual_services
    families: dict[str, GaugeMetricFamily | CounterMetricFamily] = {
        "backend_current": GaugeMetricFamily(
            "haproxy_backend_current_sessions",
            "Current number of active sessions",
            labels=["proxy"],
        ),
        "backend_total": CounterMetricFamily(
            "haproxy_backend_sessions", "Total number of sessions", labels=["proxy"]
        ),
        "backend_in": CounterMetricFamily(
            "haproxy_backend_bytes_in", "Bytes received from clients", labels=["proxy"]
        ),
        "backend_out": CounterMetricFamily(
            "haproxy_backend_bytes_out", "Bytes sent to clients", labels=["proxy"]
        ),
        "backend_active": GaugeMetricFamily(
            "haproxy_backend_active_servers",
            "Real servers up and taking clients (not halted)",
            labels=["proxy"],
        ),
        "server_current": GaugeMetricFamily(
            "haproxy_server_current_sessions", "Current number of active sessions", labels=SERVER
        ),
        "server_total": CounterMetricFamily(
            "haproxy_server_sessions", "Total number of sessions", labels=SERVER
        ),
        "server_in": CounterMetricFamily(
            "haproxy_server_bytes_in", "Bytes received from clients", labels=SERVER
        ),
        "server_out": CounterMetricFamily(
            "haproxy_server_bytes_out", "Bytes sent to clients", labels=SERVER
        ),
        "server_status": GaugeMetricFamily(
            "haproxy_server_status",
            "The real server's state: UP, DOWN (its health check fails), MAINT (halted), DRAIN",
            labels=[*SERVER, "state"],
        ),
        "server_weight": GaugeMetricFamily(
            "haproxy_server_weight", "The real server's weight", labels=SERVER
        ),
        "server_check": GaugeMetricFamily(
            "balancer_server_check_up",
            "1 while the real server's health check passes",
            labels=SERVER,
        ),
        "server_since": GaugeMetricFamily(
            "balancer_server_check_last_change_timestamp_seconds",
            "When the real server's health last changed (Unix time)",
            labels=SERVER,
        ),
        "server_check_duration": GaugeMetricFamily(
            "haproxy_server_check_duration_seconds",
            "Total duration of the latest server health check, in seconds",
            labels=SERVER,
        ),
    }
    for vs in services:
        proxy = [vs.label]
        families["backend_current"].add_metric(proxy, vs.counters.active)
        families["backend_total"].add_metric(proxy, vs.counters.total)
        families["backend_in"].add_metric(proxy, vs.counters.bytes_in)
        families["backend_out"].add_metric(proxy, vs.counters.bytes_out)
        active = sum(rs.health is Health.UP and rs.state != "halt" for rs in vs.real_servers)
        families["backend_active"].add_metric(proxy, active)
        for rs in vs.real_servers:
            labels = [vs.label, rs.label]
            families["server_current"].add_metric(labels, rs.counters.active)
            families["server_total"].add_metric(labels, rs.counters.total)
            families["server_in"].add_metric(labels, rs.counters.bytes_in)
            families["server_out"].add_metric(labels, rs.counters.bytes_out)
            shown = server_state(rs.state, rs.health)
            for state in SERVER_STATES:
                families["server_status"].add_metric([*labels, state], int(state == shown))
            families["server_weight"].add_metric(labels, rs.weight)
            families["server_check"].add_metric(labels, int(rs.health is Health.UP))
            families["server_since"].add_metric(labels, rs.since)
            if rs.check_seconds is not None:  # none before the first check, nor without one
                families["server_check_duration"].add_metric(labels, rs.check_seconds)
    yield from families.values()


def _node(figures: SystemFigures) -> Iterator[Metric]:
    load = GaugeMetricFamily(
        "balancer_node_load_average", "The node's load average", labels=["period"]
    )
    if figures.load is not None:
        load.add_metric(["1m"], figures.load.one)
        load.add_metric(["5m"], figures.load.five)
        load.add_metric(["15m"], figures.load.fifteen)
    yield load
    memory = GaugeMetricFamily(
        "balancer_node_memory_bytes",
        "The node's memory: total, and what programs can still have without swapping",
        labels=["kind"],
    )
    if figures.memory is not None:
        memory.add_metric(["total"], figures.memory.total)
        memory.add_metric(["available"], figures.memory.available)
    yield memory
    received = CounterMetricFamily(
        "balancer_node_network_receive_bytes", "Bytes received", labels=["interface"]
    )
    sent = CounterMetricFamily(
        "balancer_node_network_transmit_bytes", "Bytes sent", labels=["interface"]
    )
    for interface in figures.interfaces:
        received.add_metric([interface.name], interface.rx_bytes)
        sent.add_metric([interface.name], interface.tx_bytes)
    yield received
    yield sent


def _pair(pair: PairView | None) -> Iterator[Metric]:
    paired = GaugeMetricFamily("balancer_ha_paired", "1 while this node is one of an HA pair")
    paired.add_metric([], int(pair is not None))
    yield paired
    if pair is None:
        return
    this = pair.this
    role = GaugeMetricFamily(
        "balancer_ha_state",
        "This node's HA role, and its state: 1 for the one it is in",
        labels=["role", "state"],
    )
    for state in HA_STATES:
        role.add_metric([this.role, state], int(state == this.state))
    yield role
    sync = GaugeMetricFamily(
        "balancer_ha_config_in_sync",
        "1 while the cluster configuration here is the Primary's (always on the Primary)",
    )
    sync.add_metric([], int(this.sync in ("owner", "in sync")))
    yield sync
    link = GaugeMetricFamily(
        "balancer_ha_peer_last_answer_seconds", "Seconds since the peer last answered"
    )
    if pair.link is not None:
        link.add_metric([], pair.link)
    yield link
    split = GaugeMetricFamily(
        "balancer_ha_split_brain", "1 while both nodes hold the floating IPs (the alarm)"
    )
    split.add_metric([], int(pair.split_brain is not None and pair.split_brain.raised))
    yield split
    yield from _replication(this.replication)


def _replication(replication: ReplicationStatus | str | None) -> Iterator[Metric]:
    up = GaugeMetricFamily(
        "balancer_persistence_replication_up",
        "1 while the engine's persistence replication to the peer flows both ways",
    )
    synced = GaugeMetricFamily(
        "balancer_persistence_replication_synced",
        "1 once this node holds the peer's whole persistence tables",
    )
    pending = GaugeMetricFamily(
        "balancer_persistence_replication_pending",
        "Changes made here the peer has not acknowledged",
        labels=["proxy"],
    )
    entries = GaugeMetricFamily(
        "balancer_persistence_entries", "Live entries in the persistence table", labels=["proxy"]
    )
    if isinstance(replication, ReplicationStatus):
        up.add_metric([], int(replication.up))
        synced.add_metric([], int(replication.synced))
        for table in replication.tables:
            pending.add_metric([table.service], table.pending)
            entries.add_metric([table.service], table.entries)
    elif replication is not None:  # replicating, but its state could not be read
        up.add_metric([], 0)
    yield from (up, synced, pending, entries)


def _commits(commits: Commits) -> Iterator[Metric]:
    done = SummaryMetricFamily(
        "balancer_commit_duration_seconds",
        "Revisions given to the engine since the daemon started, and the seconds they took",
        count_value=commits.count,
        sum_value=commits.seconds,
    )
    yield done
    failed = CounterMetricFamily(
        "balancer_commit_failures", "Revisions the engine refused or failed to apply"
    )
    failed.add_metric([], commits.failed)
    yield failed
