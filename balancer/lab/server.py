"""One simulated PSM server: an RDP stand-in and an HTTPS stand-in on one IP, and a mode.

Modes, switched at runtime:

- ``pass``: healthy.
- ``fail``: the health endpoint answers ``FAIL``; RDP sessions, old and new, carry on — keeping
  users away is the load balancer's job.
- ``hang``: both ports accept connections and never answer them, so health checks time out.
- ``down``: both ports are closed (connection refused); established sessions stay up.

Leaving ``down`` opens the ports again, on the same port numbers. A connection keeps the
behaviour of the mode it was accepted in, except that the health endpoint answers for the mode
at the time of the request.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from balancer.lab.connections import Connections
from balancer.lab.https_service import HttpsService
from balancer.lab.rdp_service import RdpService

log = logging.getLogger(__name__)

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,62}")  # a host name label: it is also the CN


class Mode(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    HANG = "hang"
    DOWN = "down"


@dataclass(frozen=True, slots=True)
class LabServerSpec:
    name: str
    ip: str
    rdp_port: int  # 0: a free port, chosen when the server starts and shown by status
    https_port: int

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise ValueError(f"name: {self.name!r} is not a host name label (PSM1, psm-2, ...)")
        for field, port in (("rdp_port", self.rdp_port), ("https_port", self.https_port)):
            if not 0 <= port <= 65535:
                raise ValueError(f"{field}: {port} is not a port number")


class LabServer:
    def __init__(self, spec: LabServerSpec, tls: ssl.SSLContext) -> None:
        self.spec = spec
        self.mode = Mode.PASS
        self.rdp = Connections()
        self.https = Connections()
        self._tls = tls
        self._rdp_port = spec.rdp_port
        self._https_port = spec.https_port
        self._listeners: list[asyncio.Server] = []

    async def start(self) -> None:
        await self._listen()
        log.info(
            "%s listening on %s: rdp %d, https %d",
            self.spec.name,
            self.spec.ip,
            self._rdp_port,
            self._https_port,
        )

    async def set_mode(self, mode: Mode) -> None:
        # The mode is set first: connections accepted as the ports reopen must already follow it.
        previous, self.mode = self.mode, mode
        try:
            if mode is Mode.DOWN:
                self._close_listeners()
            elif not self._listeners:
                await self._listen()
        except OSError:
            self.mode = previous
            raise
        log.info("%s is now %s", self.spec.name, mode)

    async def stop(self) -> None:
        self._close_listeners()
        await self.rdp.abort_all()
        await self.https.abort_all()

    def status(self) -> dict[str, Any]:
        return {
            "ip": self.spec.ip,
            "rdp_port": self._rdp_port,
            "https_port": self._https_port,
            "mode": self.mode.value,
            "connections": {"rdp": self.rdp.status(), "https": self.https.status()},
        }

    async def _listen(self) -> None:
        loop = asyncio.get_running_loop()
        rdp = await loop.create_server(self._rdp_session, self.spec.ip, self._rdp_port)
        try:
            https = await loop.create_server(
                self._https_session, self.spec.ip, self._https_port, ssl=self._tls
            )
        except OSError:
            rdp.close()
            raise
        self._listeners = [rdp, https]
        # Port 0 asked for any free port; keep the one given so that leaving down reopens it.
        self._rdp_port = rdp.sockets[0].getsockname()[1]
        self._https_port = https.sockets[0].getsockname()[1]

    def _close_listeners(self) -> None:
        # Server.close() only stops listening; established connections are left alone. Its
        # wait_closed() would wait for them too (Python 3.12+), so it is not awaited.
        for listener in self._listeners:
            listener.close()
        self._listeners = []

    def _rdp_session(self) -> RdpService:
        return RdpService(self.spec.name, self.rdp, hung=self.mode is Mode.HANG)

    def _https_session(self) -> HttpsService:
        return HttpsService(
            self.spec.name, self.https, hung=self.mode is Mode.HANG, healthy=self._healthy
        )

    def _healthy(self) -> bool:
        return self.mode is not Mode.FAIL
