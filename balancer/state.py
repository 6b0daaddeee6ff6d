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


class Overview(Snapshot):
    """System Overview: what runs, and what is saved but not yet committed."""

    head: int
    applied: int | None
    pending: list[str]
    engine: EngineStatus | None
    # Why ``engine`` is None (it cannot be reached or started), or why it does not run
    # ``applied`` (it refused it): the engine's own words, one line.
    engine_error: str | None = None
