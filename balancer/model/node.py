"""Settings of this node alone. An HA pair never replicates these (the guide's 14.1.1)."""

from __future__ import annotations

import socket
from typing import Literal

from pydantic import Field

from balancer import defaults
from balancer.model.types import Frozen, Port


class NodeSettings(Frozen):
    hostname: str = Field(default_factory=socket.gethostname, min_length=1, max_length=253)
    engine: Literal["builtin", "haproxy"] = "builtin"
    https_port: Port = defaults.HTTPS_PORT
    http_port: Port | None = defaults.HTTP_PORT
