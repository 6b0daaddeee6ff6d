"""A real server (RIP): one PSM server, or any TCP server behind a virtual service."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from balancer import defaults
from balancer.model.types import Address, Frozen, Label, Port


class RealServerState(StrEnum):
    """What the operator asks of a real server; health decides the rest."""

    ONLINE = "online"
    DRAIN = "drain"  # no new clients; established and persistent clients stay
    HALT = "halt"  # no traffic at all


class RealServer(Frozen):
    label: Label
    ip: Address
    port: Port | None = Field(
        default=None, description="None: the same port the client connected to on the VIP"
    )
    weight: int = Field(default=defaults.WEIGHT, ge=0, le=defaults.WEIGHT_MAX)
    state: RealServerState = RealServerState(defaults.REAL_SERVER_STATE)
    max_connections: int = Field(default=defaults.MAX_CONNECTIONS, ge=0, le=1_000_000)

    def target_port(self, client_port: int) -> int:
        return self.port if self.port is not None else client_port
