"""Runtime state as immutable snapshots: what the engine reports and the API shows."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict


class Health(StrEnum):
    UP = "up"
    DOWN = "down"


class Snapshot(BaseModel):
    model_config = ConfigDict(frozen=True)


class Counters(Snapshot):
    active: int = 0
    total: int = 0
    bytes_in: int = 0  # from clients
    bytes_out: int = 0  # to clients


class RealServerStatus(Snapshot):
    label: str
    ip: str
    port: int | None
    weight: int
    state: str  # what the operator asked: online, drain, halt
    health: Health
    reason: str  # why health is what it is: the last check's verdict
    since: float  # when health last changed (Unix time)
    counters: Counters = Counters()
    check_seconds: float | None = None  # how long the last check took; None before one


class VirtualServiceStatus(Snapshot):
    label: str
    ip: str
    ports: str
    counters: Counters = Counters()
    fallback_connections: int = 0
    real_servers: tuple[RealServerStatus, ...] = ()


class EngineStatus(Snapshot):
    engine: str
    pid: int
    started: float
    revision: int | None  # the revision the data plane runs; None before the first apply
    virtual_services: tuple[VirtualServiceStatus, ...] = ()
    # The built-in engine's relay: "compiled core" or "Python (why)"; None: HAProxy's own.
    relay: str | None = None


class TableReplication(Snapshot):
    """One persistence table's replication to the pair's other node, as this node sees it."""

    service: str  # the virtual service's label, which names its table
    entries: int  # live entries on this node
    pending: int  # changes made here that the peer has not yet acknowledged
    # Seconds the oldest of those has waited (0.0 when none is pending); None where the engine
    # cannot tell (HAProxy says how many, not since when).
    lag: float | None


class ReplicationStatus(Snapshot):
    """This node's engine replicating persistence to the peer's (the HA pair's port 7778)."""

    peer: str  # "address:port" of the peer's engine
    up: bool  # connected and authenticated both ways: changes flow
    since: float | None  # Unix time ``up`` last changed; None before the first try ended
    # The peer's whole table has been learnt since this engine started, or the peer was found
    # absent (so none was to be had): a node takes the floating IPs only once this is true.
    synced: bool
    tables: tuple[TableReplication, ...] = ()


class Overview(Snapshot):
    """System Overview: what runs, and what is saved but not yet committed."""

    head: int
    applied: int | None
    pending: list[str]
    engine: EngineStatus | None
    # Why ``engine`` is None (it cannot be reached or started), or why it does not run
    # ``applied`` (it refused it): the engine's own words, one line.
    engine_error: str | None = None
