"""A virtual service (VIP): an address and ports that clients connect to."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field

from balancer import defaults
from balancer.model.health_check import HealthCheck
from balancer.model.real_server import RealServer
from balancer.model.types import Address, Endpoint, Frozen, Label, Ports


class Balancing(StrEnum):
    ROUND_ROBIN = "round_robin"  # weighted round robin
    LEAST_CONNECTIONS = "least_connections"  # weighted least connections


class PersistenceMode(StrEnum):
    NONE = "none"
    SOURCE_IP = "source_ip"


class Persistence(Frozen):
    mode: PersistenceMode = PersistenceMode(defaults.PERSISTENCE_MODE)
    timeout: float = Field(default=defaults.PERSISTENCE_TIMEOUT, ge=1, le=7 * 24 * 3600)
    table_size: int = Field(default=defaults.PERSISTENCE_TABLE_SIZE, ge=1, le=100_000_000)


Timeout = float


class VirtualService(Frozen):
    label: Label
    ip: Address
    ports: Ports
    protocol: Literal["tcp"] = "tcp"
    balancing: Balancing = Balancing(defaults.BALANCING)
    persistence: Persistence = Persistence()
    health_check: HealthCheck = HealthCheck()
    fallback: Endpoint | None = None
    client_timeout: Timeout = Field(default=defaults.CLIENT_TIMEOUT, ge=1, le=7 * 24 * 3600)
    server_timeout: Timeout = Field(default=defaults.SERVER_TIMEOUT, ge=1, le=7 * 24 * 3600)
    connect_timeout: Timeout = Field(default=defaults.CONNECT_TIMEOUT, ge=0.1, le=3600)
    retries: int = Field(default=defaults.RETRIES, ge=1, le=16)
    real_servers: tuple[RealServer, ...] = ()

    def real_server(self, label: str) -> RealServer | None:
        return next((rs for rs in self.real_servers if rs.label == label), None)

    @property
    def first_port(self) -> int:
        """The port a real server without a port of its own is checked on."""
        return self.ports[0][0]

    def service_port(self, rs: RealServer) -> int:
        """``rs``'s port for the service's first port: its own, or the same one."""
        return rs.target_port(self.first_port)

    def check_port(self, rs: RealServer) -> int:
        """Where ``rs``'s health check connects: the check's port, else its service port."""
        return self.health_check.port_for(self.service_port(rs))
