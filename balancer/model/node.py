"""Settings of this node alone. An HA pair never replicates these (the guide's 14.1.1)."""

from __future__ import annotations

import socket
from typing import Literal, Self

from pydantic import Field, model_validator

from balancer import defaults
from balancer.model.types import Address, Frozen, Network, Port


class Pair(Frozen):
    """This node's part in a clustered HA pair (the guide's 14.1): kept on each node, made by
    pairing and removed by Break Clustered Pair. The Primary owns the cluster configuration and
    the users; the Secondary receives them."""

    role: Literal["primary", "secondary"]
    # The nodes' own addresses: VRRP adverts go unicast between them, and so does every
    # connection between the nodes (sync, status), which is mutual TLS on ``peer_port``.
    local_address: Address
    peer_address: Address
    # The peer's management and sync port: its WebUI's HTTPS port (the guide's 9443).
    peer_port: Port = defaults.HTTPS_PORT
    # VRRP advert interval: 0.2 s replaces a dead node in under a second; 1 s is the
    # conservative profile.
    advert_interval: float = Field(defaults.ADVERT_INTERVAL, ge=0.01, le=40.95)
    # Off: a node that comes back does not take the floating IPs back until an operator says so.
    preempt: bool = defaults.PREEMPT
    # Where each node's engine replicates persistence tables to the other's, mutual TLS with
    # the pair's certificates; the same port on both nodes.
    replication_port: Port = defaults.REPLICATION_PORT

    @model_validator(mode="after")
    def _two_nodes(self) -> Self:
        if self.local_address == self.peer_address:
            raise ValueError(f"peer_address: {self.peer_address} is this node's own address")
        if self.local_address.version != self.peer_address.version:
            raise ValueError(
                f"peer_address: {self.peer_address} is not of the same family as "
                f"{self.local_address}"
            )
        hundredths = self.advert_interval * 100
        if abs(round(hundredths) - hundredths) > 1e-6:
            raise ValueError(
                f"advert_interval: {self.advert_interval} s must be in hundredths of a second"
            )
        return self


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
    # Networks whose scrapers may read GET /metrics without an API key; empty: a key is needed.
    metrics_allow: tuple[Network, ...] = defaults.METRICS_ALLOW
    # Networks that may reach the WebUI and the API (the guide's Firewall Lockdown Wizard);
    # empty: every network. The Unix socket and the HA peer's routes are let in whatever it says.
    management_allow: tuple[Network, ...] = defaults.MANAGEMENT_ALLOW
    # Where Software Update's online check reads the newest release's index (latest.json);
    # None: off, updates come only as uploaded archives.
    update_url: str | None = Field(None, max_length=2048, pattern=r"^https?://[^\s]+$")
    # This node's part in an HA pair; None while it stands alone.
    pair: Pair | None = None

    @model_validator(mode="after")
    def _distinct_ports(self) -> Self:
        if self.http_port == self.https_port:
            raise ValueError(f"http_port: {self.http_port} is already the https_port")
        return self
