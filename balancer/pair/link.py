"""Hearing the peer: this node's client to the other node of its pair, and the link.

Every connection between the nodes is mutual TLS on the peer's WebUI HTTPS port
(``Pair.peer_port``): the client asks for ``trust.PAIR_SNI``, shows this node's pair certificate,
and takes only the pair's certificate of the peer's address (``trust.client_context``). The
peer's gate lets it into ``/api/v1/peer/`` and nowhere else.

The link is the README's: seconds since the peer last answered this node's status request. Both
nodes ask each other ``GET /api/v1/peer/status`` every second; the answer is the peer's own
``NodeView``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx
from pydantic import TypeAdapter, ValidationError

from balancer.ha import trust
from balancer.ha.drift import Offset
from balancer.model.types import IPAddress
from balancer.pair.background import Background
from balancer.pair.status import NodeView

log = logging.getLogger(__name__)

# A peer that takes longer than this to answer is as good as gone; a sync that applies a
# revision on the peer gives its own, longer, time.
TIMEOUT = 3.0
INTERVAL = 1.0
STATUS = "/api/v1/peer/status"
_NODE_VIEW = TypeAdapter(NodeView)


class PeerError(Exception):
    """The peer did not answer as it should: unreachable, refused, too slow or a bad answer;
    one line."""


class Peer:
    """This node's client to its peer at ``address``:``port``, over the pair's mutual TLS."""

    def __init__(
        self,
        pair: trust.Trust,
        address: IPAddress,
        port: int,
        *,
        timeout: float = TIMEOUT,
    ) -> None:
        host = f"[{address}]" if isinstance(address, ipaddress.IPv6Address) else str(address)
        self.where = f"{host}:{port}"
        self.timeout = timeout
        self._client = httpx.AsyncClient(
            base_url=f"https://{self.where}",
            verify=trust.client_context(pair, address),
            timeout=timeout,
            trust_env=False,  # no proxy stands between the nodes
            # A connection per call: an idle one kept here holds the peer's listeners for 30 s
            # when they stop (TLS's close waits for an answer no one reads); a handshake a
            # second costs about a millisecond.
            limits=httpx.Limits(max_keepalive_connections=0),
        )
        self._unfinished: set[asyncio.Future[httpx.Response]] = set()

    async def call(
        self, method: str, path: str, body: Any = None, *, timeout: float | None = None
    ) -> Any:
        """The peer's JSON answer to ``method`` ``path`` (with ``body`` as JSON), or PeerError.
        ``timeout`` (seconds) replaces the client's for this call."""
        limit = self.timeout if timeout is None else timeout
        request = asyncio.ensure_future(
            self._client.request(method, path, json=body, timeout=limit)
        )
        try:
            # Shielded: httpcore closes a connection cancelled during its TLS handshake only
            # when it is collected (and warns), so a cancelled call's request ends on its own,
            # within ``limit``, and ``aclose`` waits for it.
            response = await asyncio.shield(request)
        except asyncio.CancelledError:
            self._unfinished.add(request)
            request.add_done_callback(_quietly(self._unfinished))
            raise
        except httpx.TimeoutException:
            raise PeerError(f"the peer at {self.where} did not answer within {limit:g} s") from None
        except httpx.HTTPError as error:
            why = " ".join(str(error).split()) or type(error).__name__
            raise PeerError(f"cannot reach the peer at {self.where}: {why}") from None
        if response.is_error:
            raise PeerError(
                f"the peer at {self.where} refused {method} {path}: "
                f"{response.status_code} {_reason(response)}"
            )
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise PeerError(
                f"the peer at {self.where} answered {method} {path} with something not JSON"
            ) from None

    async def status(self) -> NodeView:
        """The peer's own view of itself."""
        answer = await self.call("GET", STATUS)
        try:
            return _NODE_VIEW.validate_python(answer)
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "its answer"
            raise PeerError(
                f"the peer at {self.where} answered its status with {where}: {first['msg']}"
            ) from None

    async def aclose(self) -> None:
        """Close the client once the requests of cancelled calls have ended (each within its
        time limit)."""
        if self._unfinished:
            await asyncio.wait(self._unfinished)
        await self._client.aclose()


def _quietly(unfinished: set[asyncio.Future[httpx.Response]]) -> Callable[..., None]:
    """Forget a cancelled call's request once it ends, its outcome read so none is logged."""

    def done(request: asyncio.Future[httpx.Response]) -> None:
        unfinished.discard(request)
        if not request.cancelled():
            request.exception()

    return done


def _reason(response: httpx.Response) -> str:
    """The one line of an error answer: the API's first ``reason``, else its status phrase."""
    try:
        detail = response.json()["detail"]
        return str(detail[0]["reason"] if isinstance(detail, list) else detail)
    except (ValueError, KeyError, IndexError, TypeError):
        return response.reason_phrase


class Link(Background):
    """Asks the peer its status every ``interval`` seconds while started, keeping when it last
    answered (``heard_at``, on ``clock``), what it said (``peer``) and why it did not
    (``error``); and the offset of its clock from this node's ``wall`` clock (``offset``).
    Stopped, it stops asking; the peer's client is its maker's to close (the sync uses it)."""

    def __init__(
        self,
        peer: Peer,
        *,
        interval: float = INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.peer = peer
        self.interval = interval
        self.clock = clock
        self.wall = wall
        # The peer's clock less this node's, from its last answer that gave its wall time.
        self.offset: Offset | None = None
        self.heard_at: float | None = None
        self.view: NodeView | None = None  # the peer's last answer
        self.error: str | None = None  # why the last ask went unanswered; None once heard

    def link(self) -> float | None:
        """Seconds since the peer last answered, None if it never has."""
        return None if self.heard_at is None else max(0.0, self.clock() - self.heard_at)

    async def ask(self) -> None:
        """Ask the peer once. A slow answer delays the next ask; the link, read when asked
        for, grows meanwhile."""
        before = self.wall()
        try:
            view = await self.peer.status()
        except PeerError as error:
            if self.error is None:  # said once when the peer falls silent, not every second
                log.warning("peer not heard: %s", error, extra={"event": "peer_silent"})
            self.error = str(error)
            return
        after = self.wall()
        if self.error is not None:
            log.info("peer heard again", extra={"event": "peer_heard"})
        self.heard_at, self.view, self.error = self.clock(), view, None
        if view.facts is not None:
            # The peer read its clock somewhere within the request: at its midpoint, give or
            # take half the round trip.
            middle = (before + after) / 2
            self.offset = Offset(view.facts.wall - middle, (after - before) / 2)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await self.ask()
            await asyncio.sleep(max(0.0, self.interval - (loop.time() - started)))
