"""The management service, as the WebUI's Restart Services and Local Configuration pages act on
it: what it listens on now, a restart of it, and the certificate its HTTPS listener serves.

The daemon provides it to the application it serves; an application run without the daemon
(in tests) has none, and those pages say what they cannot do there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fastapi import FastAPI
from starlette.requests import HTTPConnection

from balancer.certificates import ServedCertificate
from balancer.model import NodeSettings


@dataclass(frozen=True, slots=True)
class Management:
    running: NodeSettings  # the node settings the listeners were opened with
    certificate: ServedCertificate
    # Close the listeners once the answers in progress are sent, then open them again with
    # the saved node settings; the engine keeps running, and every session ends.
    restart: Callable[[], None]


def provide(app: FastAPI, management: Management) -> None:
    app.state.management = management


def of(connection: HTTPConnection) -> Management | None:
    found: Management | None = getattr(connection.app.state, "management", None)
    return found
