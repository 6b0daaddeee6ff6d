"""The gate in front of every route: who is calling, and may they.

On the network, every request needs a WebUI session (a cookie) or an API key (``Authorization:
Bearer <key>``), except the sign-in page and the WebUI's static files. A request made with the
session cookie that changes anything must carry the session's CSRF token, in the
``X-CSRF-Token`` header or, from a plain form, a ``csrf_token`` field (the first field of a
form that uploads a file); so must a sign-in.

The routes between the nodes of an HA pair, under ``/api/v1/peer/``, take no session and no key:
only the peer, showing its pair certificate on the connection (``PairTLS.admits``); anything
else there is refused. That certificate opens nothing else. Pairing's two join routes are let
through to check the peer's ``loadbalancer`` password themselves (HTTP Basic), as no trust
exists yet.

Prometheus's ``GET /metrics`` takes an API key too, or none from a network in the node setting
``metrics_allow``.

Then the caller's role (``balancer.roles``) must be at least the one the table there gives the
route: otherwise 403, naming both roles, as JSON, or for a browser as a WebUI page (``refused``).

Only the Unix socket's listener marks its requests local: there the caller is the OS user the
``balancer`` command names (the socket is reachable by root alone), as before there was a
network listener. Anything not so marked is treated as coming from the network.
"""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import IPv6Address, ip_address
from typing import Annotated
from urllib.parse import parse_qs, quote

from fastapi import Depends, Request
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from balancer.front.access import SIGN_IN_COOKIE, Access, Caller
from balancer.front.listeners import PEER_CERTIFICATE, PairTLS
from balancer.roles import Role, needed

LOCAL = "balancer.local"
CALLER = "balancer.caller"
WEBUI = "/lbadmin/"
SIGN_IN = "/lbadmin/sign-in"
STATIC = "/lbadmin/static/"
# The routes the nodes of a pair call each other on (balancer.api.peer).
PEER = "/api/v1/peer/"
# Pairing's routes on the node joining a pair: they check HTTP Basic themselves.
JOIN = frozenset({"/api/v1/ha/join/offer", "/api/v1/ha/join/accept"})
# Prometheus's scrape (balancer.api.metrics): a key, or a network in metrics_allow.
METRICS = "/metrics"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# A form bigger than this is not a form the WebUI sends; its token is not looked for.
FORM_LIMIT = 1 << 20
# The WebUI loads nothing from elsewhere, runs no inline script and cannot be framed.
_WEBUI_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def local(app: ASGIApp) -> ASGIApp:
    """``app`` as served on the Unix socket: its callers are trusted local users."""

    async def trusted(scope: Scope, receive: Receive, send: Send) -> None:
        await app({**scope, LOCAL: True}, receive, send)

    return trusted


def caller(request: Request) -> Caller:
    found: Caller = request.scope[CALLER]
    return found


def author(request: Request) -> str:
    """Whose name goes into the audit trail: the signed-in user, the key's owner, or the OS
    user (``X-Balancer-User``) on the Unix socket."""
    return caller(request).user


Author = Annotated[str, Depends(author)]


def is_public(method: str, path: str) -> bool:
    return (
        path == SIGN_IN
        or (method in SAFE_METHODS and path.startswith(STATIC))
        or (method == "POST" and path in JOIN)
    )


# A page saying a caller's role may not do what they asked (the WebUI's), given the request
# with its caller and the role needed; None where the caller asked for no page.
Refused = Callable[[Request, Role], Response | None]


class Gate:
    def __init__(
        self,
        app: ASGIApp,
        access: Access,
        pair: PairTLS | None = None,
        refused: Refused | None = None,
    ) -> None:
        self.app = app
        self.access = access
        self.pair = pair if pair is not None else PairTLS()  # standalone: no peer
        self.refused = refused

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":
            await send({"type": "websocket.close", "code": 1008})  # there are no websockets
            return
        connection = HTTPConnection(scope)
        method, path = scope["method"], scope["path"]
        send = _hardened(send, path)
        if path.startswith(PEER):
            await self._peer(scope, receive, send)
            return
        if scope.get(LOCAL):
            user = connection.headers.get("x-balancer-user", "local")
            # Root alone reaches the socket: root may do everything anyway.
            who: Caller | None = Caller(user, "local", role=Role.ADMINISTRATOR)
        else:
            # A live refresh is not use: it must not keep an idle session open.
            touch = "x-balancer-poll" not in connection.headers
            who = self.access.caller(connection, touch=touch)
        if who is None and not is_public(method, path) and not self._may_scrape(connection):
            await _unauthorised(connection)(scope, receive, send)
            return
        role = needed(method, path) if who is not None else None
        if who is not None and role is not None and who.role < role:
            await self._refuse(Request({**scope, CALLER: who}), who, role)(scope, receive, send)
            return
        if method not in SAFE_METHODS:
            # What a CSRF token is made from: the sign-in form's cookie, or the session's.
            cookie = (
                connection.cookies.get(SIGN_IN_COOKIE)
                if path == SIGN_IN
                else (who.session if who is not None else None)
            )
            if cookie is not None or path == SIGN_IN:
                token, receive = await _csrf_token(connection, receive)
                if not (cookie and token and self.access.sessions.csrf_ok(cookie, token)):
                    await _forbidden(connection)(scope, receive, send)
                    return
        await self.app({**scope, CALLER: who}, receive, send)

    def _refuse(self, request: Request, who: Caller, role: Role) -> Response:
        page = self.refused(request, role) if self.refused is not None else None
        if page is not None:
            return page
        reason = refusal(who, role)
        if "hx-request" in request.headers:
            return Response(reason, status_code=403, media_type="text/plain")
        return JSONResponse({"detail": [{"field": "role", "reason": reason}]}, status_code=403)

    def _may_scrape(self, connection: HTTPConnection) -> bool:
        """GET /metrics from a network the operator listed in ``metrics_allow``: a Prometheus
        there scrapes without a key; the list opens nothing else."""
        if connection.url.path != METRICS or connection.scope["method"] not in SAFE_METHODS:
            return False
        allowed = self.access.store.node_settings().metrics_allow
        try:
            address = ip_address(connection.client.host if connection.client else "")
        except ValueError:
            return False
        if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # an IPv4 scraper on a dual-stack listener
        return any(address in network for network in allowed)

    async def _peer(self, scope: Scope, receive: Receive, send: Send) -> None:
        shown = scope.get("state", {}).get(PEER_CERTIFICATE)
        peer = self.pair.peer_address
        if peer is None or not self.pair.admits(shown):
            reason = "only this node's HA peer may call here, showing its pair certificate"
            # Closed, so the peer's next request makes a new handshake: a connection accepted
            # just before this node joined the pair showed the pair's certificate but was not
            # asked for the peer's, and kept alive it would be refused for ever.
            response = JSONResponse(
                {"detail": [{"field": "certificate", "reason": reason}]},
                status_code=403,
                headers={"Connection": "close"},
            )
            await response(scope, receive, send)
            return
        who = Caller(f"peer {peer}", "peer", role=Role.ADMINISTRATOR)
        await self.app({**scope, CALLER: who}, receive, send)


def refusal(who: Caller, role: Role) -> str:
    """Why ``who`` may not: the role needed and theirs, in one line."""
    holder = f"this API key of {who.user}'s" if who.via == "key" else who.user
    return f"this needs the role {role} or above; {holder} has the role {who.role}"


def _unauthorised(connection: HTTPConnection) -> Response:
    path = connection.url.path
    if "hx-request" in connection.headers:
        # htmx follows this header with a full page load, rather than swapping a sign-in
        # page into the middle of the one being shown.
        return Response(status_code=401, headers={"HX-Redirect": SIGN_IN})
    if connection.scope["method"] == "GET" and (path == "/" or path.startswith(WEBUI[:-1])):
        target = SIGN_IN if path in ("/", WEBUI) else f"{SIGN_IN}?next={quote(path)}"
        return RedirectResponse(target, status_code=303)
    reason = "sign in, or send an API key as 'Authorization: Bearer <key>'"
    return JSONResponse(
        {"detail": [{"field": "authorization", "reason": reason}]},
        status_code=401,
        headers={"WWW-Authenticate": 'Bearer realm="balancer"'},
    )


def _forbidden(connection: HTTPConnection) -> Response:
    reason = "missing or wrong CSRF token: reload the page and try again"
    if "hx-request" in connection.headers or connection.url.path.startswith(WEBUI):
        return Response(reason, status_code=403, media_type="text/plain")
    return JSONResponse({"detail": [{"field": "csrf_token", "reason": reason}]}, status_code=403)


async def _csrf_token(connection: HTTPConnection, receive: Receive) -> tuple[str | None, Receive]:
    """The CSRF token sent in the header or a form, and a ``receive`` that still gives the
    application the whole body."""
    header = connection.headers.get("x-csrf-token")
    kind, options = parse_options_header(connection.headers.get("content-type", ""))
    if header:
        return header, receive
    if kind == b"application/x-www-form-urlencoded":
        body, more, receive = await _read(receive, lambda chunk: False)
        if more:
            return None, receive
        try:
            fields = parse_qs(body.decode("latin-1"), max_num_fields=100)
        except ValueError:  # more fields than any WebUI form has
            return None, receive
        tokens = fields.get("csrf_token", [])
        return (tokens[0] if tokens else None), receive
    if kind == b"multipart/form-data" and options.get(b"boundary"):
        return await _multipart_token(options[b"boundary"], receive)
    return None, receive


async def _multipart_token(boundary: bytes, receive: Receive) -> tuple[str | None, Receive]:
    """The token of a form that uploads a file: its first field must be ``csrf_token`` (the
    WebUI's forms put it first), so it is read before the file, however big that is."""
    found: dict[str, bytes] = {}
    part: dict[str, bytes] = {}

    def header_field(data: bytes, start: int, end: int) -> None:
        part["field"] = part.get("field", b"") + data[start:end]

    def header_value(data: bytes, start: int, end: int) -> None:
        part["value"] = part.get("value", b"") + data[start:end]

    def header_end() -> None:
        if part.pop("field", b"").lower() == b"content-disposition":
            part["disposition"] = part.get("value", b"")
        part.pop("value", None)

    def part_data(data: bytes, start: int, end: int) -> None:
        part["data"] = part.get("data", b"") + data[start:end]

    def part_end() -> None:
        _, options = parse_options_header(part.get("disposition", b""))
        if options.get(b"name") == b"csrf_token" and b"filename" not in options:
            found["token"] = part.get("data", b"")
        found["first part"] = b""

    parser = MultipartParser(
        boundary,
        {
            "on_header_field": header_field,
            "on_header_value": header_value,
            "on_header_end": header_end,
            "on_part_data": part_data,
            "on_part_end": part_end,
        },
    )

    def enough(chunk: bytes) -> bool:
        try:
            parser.write(chunk)
        except MultipartParseError:
            found["first part"] = b""  # not a form: no token
        # No token is longer than this: the first part is not one, whatever follows.
        return bool(found) or len(part.get("data", b"")) > 128

    _, _, receive = await _read(receive, enough)
    token = found.get("token")
    return (token.decode("latin-1") if token else None), receive


async def _read(receive: Receive, enough: Callable[[bytes], bool]) -> tuple[bytes, bool, Receive]:
    """The body read until ``enough`` says so, its end, or FORM_LIMIT; whether more is left;
    and a ``receive`` that gives the application the body from its start."""
    chunks, size, more, done = [], 0, True, False
    while more and not done and size <= FORM_LIMIT:
        message = await receive()
        if message["type"] != "http.request":
            return b"", False, receive
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        more = message.get("more_body", False)
        done = enough(chunks[-1])
    body = b"".join(chunks)
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": more}

    return body, more, replay


def _hardened(send: Send, path: str) -> Send:
    """``send`` adding the headers every answer should carry."""

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = MutableHeaders(scope=message)
            headers.setdefault("X-Content-Type-Options", "nosniff")
            headers.setdefault("X-Frame-Options", "DENY")
            headers.setdefault("Referrer-Policy", "same-origin")
            if path.startswith(WEBUI):
                headers.setdefault("Content-Security-Policy", _WEBUI_POLICY)
                if not path.startswith(STATIC):
                    headers.setdefault("Cache-Control", "no-store")
        await send(message)

    return sending
