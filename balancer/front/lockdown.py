"""Management lockdown, the guide's Firewall Lockdown Wizard: the node setting
``management_allow`` names the networks that may reach the WebUI and the API; empty, every
network may.

The management service enforces it itself, on every network listener (HTTPS and plain HTTP),
in front of the gate and every route: a caller from elsewhere gets a plain 403, even for the
sign-in page, and a log line with its address. The Unix socket is never behind it, so
``balancer`` on the appliance itself can always undo a lockdown.

Let through whatever the list says:
- the HA peer's routes (``/api/v1/peer/``): the gate admits there only the peer showing its pair
  certificate, mutual TLS checked on every connection, which an address adds nothing to. So a
  lockdown never breaks a running pair; pairing's join routes are not among them, and a node
  being paired must list the other's address;
- ``GET /metrics`` from a network in ``metrics_allow``, which the operator listed for Prometheus.

The list is read from the store at each request, so a change holds at once, whichever way it
was saved. A change that would shut out the address it comes from is refused (``lockout``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv6Address, ip_address

from starlette.requests import HTTPConnection
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from balancer import validate
from balancer.front.gate import LOCAL
from balancer.model import NodeSettings
from balancer.model.types import Network
from balancer.store import Store
from balancer.validate import Invalid, Problem

log = logging.getLogger("balancer.lockdown")

FIELD = "management_allow"
# Always let through: the gate checks the peer's certificate there (see above).
PEER = "/api/v1/peer/"
METRICS = "/metrics"


def allows(networks: Sequence[Network], address: str) -> bool:
    """Whether a caller at ``address`` may manage the node under ``networks``."""
    if not networks:
        return True
    found = _address(address)
    return found is not None and any(found in network for network in networks)


def lockout(networks: Sequence[Network], address: str | None) -> Problem | None:
    """Why a change of the list to ``networks``, asked from ``address``, is refused: it would
    shut that very caller out. None for the Unix socket's callers (``address`` None), which no
    list reaches."""
    if address is None or allows(networks, address):
        return None
    listed = ", ".join(str(network) for network in networks)
    return Problem(
        FIELD,
        f"{listed} would lock out {address}, the address you are using now: "
        f"add a network that holds it, or make the change with `balancer lockdown` on the "
        "appliance itself",
    )


def address_of(connection: HTTPConnection) -> str | None:
    """The network address a request came from, an IPv4 caller of a dual-stack listener as
    IPv4; None on the Unix socket."""
    if connection.scope.get(LOCAL) or connection.client is None:
        return None
    return _shown(connection.client.host)


def save(store: Store, networks: list[str], address: str | None, *, author: str) -> NodeSettings:
    """The node settings with ``networks`` as the list, saved (audited as node_settings); or
    Invalid naming the entry that is not a network, or the caller's ``address`` that the list
    would shut out. The API and the WebUI save it so alike."""
    node = store.node_settings()
    settings = validate.parse_as(NodeSettings, {**node.model_dump(), FIELD: networks})
    refused = lockout(settings.management_allow, address)
    if refused is not None:
        raise Invalid([refused])
    if settings != node:
        store.save_node_settings(settings, author=author)
    return settings


class Lockdown:
    """A network listener's application, behind ``management_allow``."""

    def __init__(self, app: ASGIApp, store: Store) -> None:
        self.app = app
        self.store = store

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(PEER):
            await self.app(scope, receive, send)
            return
        address = _shown(scope["client"][0]) if scope.get("client") else ""
        node = self.store.node_settings()
        scrape = scope["path"] == METRICS and scope["method"] in ("GET", "HEAD")
        if allows(node.management_allow, address) or (
            scrape and bool(node.metrics_allow) and allows(node.metrics_allow, address)
        ):
            await self.app(scope, receive, send)
            return
        log.warning(
            "management refused: the address is not in management_allow",
            extra={"address": address, "path": scope["path"]},
        )
        refused = PlainTextResponse(
            f"{address} may not manage this appliance: it is not in {FIELD}\n",
            status_code=403,
            headers={"Connection": "close"},
        )
        await refused(scope, receive, send)


def _address(text: str) -> IPv4Address | IPv6Address | None:
    try:
        found = ip_address(text)
    except ValueError:
        return None
    if isinstance(found, IPv6Address) and found.ipv4_mapped is not None:
        return found.ipv4_mapped  # an IPv4 caller on a dual-stack listener
    return found


def _shown(host: str) -> str:
    found = _address(host)
    return host if found is None else str(found)
