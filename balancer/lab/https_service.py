"""The lab's stand-in for a PSM server's IIS: the health endpoint and the HTML5 gateway's page.

``GET /psm/api/health`` answers 200 with the plain-text body ``PASS``, or ``FAIL`` while the
server fails — a broken PSM still answers 200, only the body tells. Any other path answers a
small page naming the server. GET and HEAD are served, one request per connection
(``Connection: close``). Paths compare without case, as IIS does. A connection accepted while the
server hangs completes TLS (IIS leaves TLS to the kernel) and is never answered.
"""

from __future__ import annotations

import asyncio
import html
import http
from collections.abc import Callable
from typing import cast

import h11

from balancer.lab.connections import Connections

HEALTH_PATH = b"/psm/api/health"

Headers = list[tuple[str, str]]


def answer(method: bytes, target: bytes, name: str, healthy: bool) -> tuple[int, Headers, bytes]:
    """Status, headers and body for one request to server ``name``."""
    if method not in (b"GET", b"HEAD"):
        return 405, [("allow", "GET, HEAD"), ("content-type", "text/plain")], b"GET or HEAD\n"
    if target.split(b"?", 1)[0].lower() == HEALTH_PATH:
        return 200, [("content-type", "text/plain")], b"PASS" if healthy else b"FAIL"
    return 200, [("content-type", "text/html; charset=utf-8")], page(name)


def page(name: str) -> bytes:
    title = html.escape(name)
    return (
        f"<!doctype html>\n<html><head><title>{title}</title></head>\n"
        f"<body><h1>{title}</h1><p>HTML5 gateway stand-in (Balancer lab)</p></body></html>\n"
    ).encode()


class HttpsService(asyncio.Protocol):
    _transport: asyncio.Transport  # from connection_made on

    def __init__(
        self, name: str, connections: Connections, hung: bool, healthy: Callable[[], bool]
    ) -> None:
        self._name = name
        self._connections = connections
        self._hung = hung
        self._healthy = healthy
        self._http = h11.Connection(h11.SERVER)
        self._request: h11.Request | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._connections.opened(self._transport)

    def data_received(self, data: bytes) -> None:
        if not self._hung:
            self._http.receive_data(data)
            self._handle()

    def eof_received(self) -> bool:
        if not self._hung:
            self._http.receive_data(b"")
            self._handle()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._connections.closed(self._transport)

    def _handle(self) -> None:
        try:
            while True:
                event = self._http.next_event()
                if isinstance(event, h11.Request):
                    self._request = event
                elif isinstance(event, h11.EndOfMessage) and self._request is not None:
                    method, target = self._request.method, self._request.target
                    status, headers, body = answer(method, target, self._name, self._healthy())
                    self._respond(status, headers, body, head=method == b"HEAD")
                    return
                elif not isinstance(event, h11.Data):  # waiting for bytes, or the client left
                    return
        except h11.RemoteProtocolError as error:
            if self._http.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                headers = [("content-type", "text/plain")]
                self._respond(error.error_status_hint, headers, f"{error}\n".encode(), head=False)
            else:
                self._transport.close()

    def _respond(self, status: int, headers: Headers, body: bytes, head: bool) -> None:
        headers = [*headers, ("content-length", str(len(body))), ("connection", "close")]
        reason = http.HTTPStatus(status).phrase
        events: list[h11.Event] = [h11.Response(status_code=status, headers=headers, reason=reason)]
        # A reply to HEAD announces the body's length but carries no body.
        if not head:
            events.append(h11.Data(data=body))
        events.append(h11.EndOfMessage())
        self._transport.write(b"".join(self._http.send(event) or b"" for event in events))
        self._transport.close()
