"""Routes for the clustered HA pair (the guide's Cluster Configuration > High-Availability
Configuration): the pair as this node sees it, *Add new node*, *Break Clustered Pair*, the
pair's HA settings (advert interval, preemption; changed on the Primary, applied on both), and
the two routes a joining node answers the Primary on.

The join routes take no session or key (no trust exists yet): the gate lets them through and
they check HTTP Basic as this node's ``loadbalancer`` user themselves, throttled as a sign-in
is. A password is never logged or audited; a pairing, a refusal and a break are audited.
"""

from __future__ import annotations

import base64
import binascii
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from balancer import defaults, users
from balancer.api import peer
from balancer.front.bodies import RequestBody
from balancer.front.errors import from_message, reply
from balancer.front.gate import Author, caller
from balancer.front.throttle import Throttle
from balancer.ha import pairing as checks
from balancer.ha.keepalived import PROFILES
from balancer.ha.pairing import Step
from balancer.model import Pair
from balancer.pair import facts, pairing, replication
from balancer.pair.cluster import Cluster, PairError
from balancer.validate import Invalid, Problem

log = logging.getLogger("balancer.access")

# Which field of the request a refusal is about.
_FIELD = {
    checks.Problem.FINGERPRINT: "fingerprint",
    checks.Problem.PASSWORD: "password",
    checks.Problem.UNREACHABLE: "peer_address",
    checks.Problem.VERSION: "peer_address",
    checks.Problem.NOT_EMPTY: "replace",
}
# pairing.Request's names for the fields, as this route's body names them.
_BODY = {"local": "local_address", "peer": "peer_address", "fingerprint": "fingerprint"}


class AddNode(RequestBody):
    local_address: str = Field(description="this node's address, the Primary's")
    peer_address: str = Field(description="the new peer's address, the Secondary's")
    peer_port: int = Field(defaults.HTTPS_PORT, ge=1, le=65535, description="its WebUI's port")
    password: str = Field(
        min_length=1,
        description="the password of the peer's loadbalancer user",
        json_schema_extra={"format": "password"},
    )
    fingerprint: str = Field(
        description="the SHA-256 fingerprint of the peer's WebUI certificate, as its "
        "`balancer serve` printed it: the password goes to that certificate only"
    )
    replace: bool | None = Field(
        None,
        description="whether to replace the services the peer has of its own; unset: asked "
        "(409) when it has some",
    )


class HaSettings(RequestBody):
    """The pair's HA settings; what is not given stays as it is."""

    advert_interval: float | None = Field(
        None, description="seconds between VRRP adverts, in hundredths (default 0.2)"
    )
    profile: Literal["default", "conservative"] | None = Field(
        None, description="instead of advert_interval: default (0.2 s) or conservative (1 s)"
    )
    preempt: bool | None = Field(
        None, description="whether a Primary that comes back takes the floating IPs back"
    )
    replication_port: int | None = Field(
        None, ge=1, le=65535, description="where the engines replicate persistence (7778)"
    )


def settings_of(pair: Pair | None) -> dict[str, Any] | None:
    """The pair's HA settings as the API shows them; None while this node stands alone."""
    if pair is None:
        return None
    named = [name for name, advert in PROFILES.items() if advert == pair.advert_interval]
    profile = named[0] if named else None
    return {
        "advert_interval": pair.advert_interval,
        "profile": profile,
        "preempt": pair.preempt,
        "replication_port": pair.replication_port,
    }


def _steps(steps: tuple[Step, ...]) -> list[dict[str, str]]:
    return [{"text": step.text, "progress": step.progress.value} for step in steps]


def router(cluster: Cluster, *, clock: Callable[[], float] = time.monotonic) -> APIRouter:
    api = APIRouter(prefix="/api/v1/ha", tags=["high availability"])
    joining = pairing.Joining(cluster)
    throttle = Throttle(clock)
    # The steps of the pairing under way, or of the last one, for a page that follows it.
    shown: dict[str, tuple[Step, ...]] = {}

    @api.get("", summary="The HA pair as this node sees it; pair null while it stands alone")
    async def view() -> dict[str, Any]:
        found, pair = cluster.view(), cluster.pair
        peer = "" if pair is None else str(pair.peer_address)
        # Each persistence table on both nodes, with the words System Overview says.
        replicated = replication.shown(found, peer, now=time.time())
        compared = await facts.drift(cluster.facts, found, cluster.link)
        return {
            "pair": None if found is None else asdict(found),
            "settings": settings_of(pair),
            "pairing": _steps(shown.get("steps", ())),
            "replication": None if replicated is None else asdict(replicated),
            # Both nodes' unreplicated settings compared, each row marked if they differ.
            "drift": None if compared is None else asdict(compared),
        }

    @api.patch(
        "",
        summary="The pair's HA settings, on the Primary: both nodes' keepalived reload with them",
        responses={
            409: {
                "description": "standalone, on the Secondary, or a node did not take "
                "them (nothing was changed on either): why, in one line"
            }
        },
    )
    async def configure(body: HaSettings, user: Author) -> dict[str, Any]:
        pair = cluster.pair
        if pair is None:
            raise HTTPException(409, "this node is not in a pair")
        if body.profile is not None and body.advert_interval is not None:
            raise Invalid([Problem("profile", "give a profile or advert_interval, not both")])
        advert = pair.advert_interval if body.advert_interval is None else body.advert_interval
        if body.profile is not None:
            advert = PROFILES[body.profile]
        preempt = pair.preempt if body.preempt is None else body.preempt
        try:
            said = await cluster.configure(
                advert, preempt, author=user, replication_port=body.replication_port
            )
        except PairError as error:
            raise HTTPException(409, str(error)) from None
        return {"message": said, "settings": settings_of(cluster.pair)}

    @api.post(
        "/pair",
        summary="Add new node: pair this node, as the Primary, with a peer (the guide's 14.1.2)",
        responses={
            409: {"description": "the peer has services: replace them? (field replace)"},
            502: {"description": "the peer did not become the Secondary, and why"},
        },
    )
    async def add_node(body: AddNode, user: Author) -> JSONResponse:
        try:
            request = checks.Request(
                body.local_address,
                body.peer_address,
                body.fingerprint,
                pairing.version(),
                body.peer_port,
            )
        except ValueError as error:
            problem = from_message(str(error))
            named = _BODY.get(problem.field, problem.field)
            raise Invalid([Problem(named, problem.reason)]) from None

        def progress(steps: tuple[Step, ...]) -> None:
            shown["steps"] = steps

        try:
            outcome = await pairing.add_node(
                cluster, request, body.password, body.replace, progress, author=user
            )
        except pairing.PairingError as error:
            return _refused(409, error)
        progress(outcome.steps)
        steps = _steps(outcome.steps)
        if outcome.paired:
            return JSONResponse({"paired": True, "message": outcome.message, "steps": steps})
        if outcome.question is not None:
            status, field = 409, "replace"
        elif outcome.problem is not None:
            status, field = 422, _FIELD[outcome.problem]
        else:
            status, field = 502, "peer_address"
        detail = [{"field": field, "reason": outcome.message}]
        return JSONResponse({"detail": detail, "steps": steps}, status_code=status)

    @api.delete("/pair", summary="Break Clustered Pair: both nodes stand alone")
    async def break_pair(user: Author) -> Response:
        try:
            plan = await pairing.break_pair(cluster, author=user)
        except pairing.PairingError as error:
            return _refused(409, error)
        return JSONResponse({"nodes": [{**asdict(leave), "said": str(leave)} for leave in plan]})

    async def signed_in(request: Request) -> None:
        """HTTP Basic as this node's loadbalancer user, throttled as a sign-in; 401 or 429."""
        address = request.client.host if request.client else "unknown"
        keys = (f"address {address}", f"user {defaults.USER}")
        wait = throttle.wait(*keys)
        if wait > 0:
            log.warning("pairing refused: too many failures", extra={"address": address})
            raise HTTPException(
                429,
                f"too many failed attempts: try again in {math.ceil(wait)} s",
                headers={"Retry-After": str(math.ceil(wait))},
            )
        delay = throttle.failed(*keys)
        password = _basic_password(request)
        found = None
        if password is not None:
            found = await run_in_threadpool(users.verify, cluster.store, defaults.USER, password)
        if found is None:
            log.warning("pairing refused: wrong password", extra={"address": address})
            cluster.store.audit(
                author=defaults.USER,
                action="ha_join_refused",
                target=request.url.path,
                detail={"address": address, "delay": delay},
            )
            raise HTTPException(
                401,
                f"the {defaults.USER} user's password is wrong",
                headers={"WWW-Authenticate": 'Basic realm="balancer pairing"'},
            )
        throttle.succeeded(*keys)

    signed = [Depends(signed_in)]

    @api.post("/join/offer", include_in_schema=False, dependencies=signed)
    async def offer(body: pairing.Offer) -> pairing.Offered:
        """A Primary asks this node to join its pair: what its checks need."""
        return await joining.offer(body)

    @api.post(
        "/join/accept",
        include_in_schema=False,
        response_model=pairing.Accepted,
        dependencies=signed,
    )
    async def accept(body: pairing.Acceptance, request: Request) -> Response:
        """The Primary's checks passed: become its Secondary."""
        address = request.client.host if request.client else "unknown"
        try:
            accepted = await joining.accept(body, author=f"primary {address}")
        except pairing.PairingError as error:
            return _refused(422, error)
        return JSONResponse(accepted.model_dump(mode="json"))

    return api


def peer_router(cluster: Cluster) -> APIRouter:
    """The peer's side of a break, behind the gate's mutual-TLS guard (balancer.api.peer)."""
    api = peer.router()

    @api.post("/leave", status_code=204)
    async def leave(body: pairing.Leaving, request: Request) -> None:
        """The peer broke the pair: this node stands alone."""
        await pairing.leave(cluster, body.keeps_floating_ips, author=caller(request).user)

    return api


def _refused(status: int, error: pairing.PairingError) -> JSONResponse:
    return reply(status, [from_message(str(error))])


def _basic_password(request: Request) -> str | None:
    """The password of HTTP Basic for the loadbalancer user, None if there is none."""
    scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        name, colon, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return password if colon and name == defaults.USER else None
