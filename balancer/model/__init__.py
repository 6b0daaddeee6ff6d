"""What the operator declares: virtual services, real servers, health checks, persistence, node."""

from balancer.model.config import Config
from balancer.model.health_check import CheckType, HealthCheck, HttpMethod
from balancer.model.node import NodeSettings, Pair
from balancer.model.real_server import RealServer, RealServerState
from balancer.model.types import Endpoint, Label, PortRange, Ports
from balancer.model.virtual_service import Balancing, Persistence, PersistenceMode, VirtualService

__all__ = [
    "Balancing",
    "CheckType",
    "Config",
    "Endpoint",
    "HealthCheck",
    "HttpMethod",
    "Label",
    "NodeSettings",
    "Pair",
    "Persistence",
    "PersistenceMode",
    "PortRange",
    "Ports",
    "RealServer",
    "RealServerState",
    "VirtualService",
]
