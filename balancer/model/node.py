"""Settings of this node alone. An HA pair never replicates these (the guide's 14.1.1)."""

from __future__ import annotations

import socket
from typing import Literal, Self

from pydantic import Field, model_validator

from balancer import defaults
from balancer.model.types import Address, Frozen, Port


class NodeSettings(Frozen):
    hostname: str = Field(default_factory=socket.gethostname, min_length=1, max_length=253)
    engine: Literal["builtin", "haproxy"] = "builtin"
    # Built-in engine processes relaying side by side (see the README's Workers); a change
    # restarts the engine.
    workers: int = Field(defaults.WORKERS, ge=1, le=defaults.WORKERS_MAX)
    https_port: Port = defaults.HTTPS_PORT
    http_port: Port | None = defaults.HTTP_PORT
    # Where the WebUI and the API listen; None is every address of the node.
    listen_address: Address | None = Field(default=defaults.LISTEN_ADDRESS, validate_default=True)
    # A WebUI session unused this long must sign in again.
    session_idle_timeout: float = Field(defaults.SESSION_IDLE_TIMEOUT, gt=0)
    # However busy, a WebUI session this old must sign in again.
    session_max_lifetime: float = Field(defaults.SESSION_MAX_LIFETIME, gt=0)
    # System Overview offers the Setup Wizard while nothing is configured (the guide's 8.3),
    # until an operator dismisses the offer.
    setup_wizard_dismissed: bool = False

    @model_validator(mode="after")
    def _distinct_ports(self) -> Self:
        if self.http_port == self.https_port:
            raise ValueError(f"http_port: {self.http_port} is already the https_port")
        return self
