"""The routes the two nodes of an HA pair call each other on, under ``/api/v1/peer``.

Only the peer reaches them: the gate (balancer.front.gate, ``PEER``) lets a request in there
only over the pair's mutual TLS, with the pair's certificate of the configured peer address, and
refuses any session, API key or other certificate with 403. So a route here checks nothing of
its caller; ``balancer.front.gate.caller(request)`` is ``Caller("peer <address>", "peer")``.

Another module's peer routes (the Secondary's receiving routes, balancer.api.replica) take
their ``APIRouter`` from ``router()`` and are installed beside ``status_router`` in
balancer.api.app: the prefix puts them behind the same guard.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel

from balancer.front.gate import PEER, caller
from balancer.pair.cluster import Cluster, PairError


def router() -> APIRouter:
    """An empty router for routes between the nodes; not in the API's documentation, which is
    the operator's."""
    return APIRouter(prefix=PEER.rstrip("/"), tags=["peer"], include_in_schema=False)


class Settings(BaseModel):
    """The pair's HA settings, as the Primary sends them (``Cluster.configure``)."""

    advert_interval: float
    preempt: bool
    replication_port: int | None = None  # None: as it is


def status_router(cluster: Cluster) -> APIRouter:
    api = router()

    @api.get("/status")
    async def status() -> dict[str, Any]:
        """This node as it sees itself (a ``NodeView``) with its node settings' facts, its
        clock read last: the peer's link is the time since it last had this answer, and the
        peer measures the offset between the clocks by it."""
        view = cluster.view()
        if view is None:  # broken off the pair since the gate let the request in
            raise HTTPException(409, "this node is not in a pair")
        return asdict(replace(view.this, facts=await cluster.facts.gather()))

    @api.post("/heartbeat/{action}")
    async def heartbeat(action: Literal["restart", "switchover"]) -> dict[str, str]:
        """The Primary's Restart Heartbeat, or a switchover asked on the other node: this
        node's keepalived, answered once it runs again, with this node's state then."""
        try:
            await cluster.own_heartbeat(action)
        except PairError as error:
            raise HTTPException(409, str(error)) from None
        view = cluster.view()
        # The state it came back in: the asker's link may still hold the one of the restart.
        return {"done": action, "state": "unknown" if view is None else view.this.state}

    @api.delete("/persistence/{service}")
    async def clear_persistence(service: str, request: Request) -> dict[str, int]:
        """The peer's operator cleared this table there: this node's engine clears it too
        (audited here as done by the peer)."""
        cleared = await cluster.controller.clear_persistence(service)
        cluster.store.audit(
            author=caller(request).user,
            action="clear_persistence",
            target=service,
            detail={"cleared": cleared},
        )
        return {"cleared": cleared}

    @api.put("/settings", status_code=204)
    async def settings(body: Settings, request: Request) -> None:
        """The Primary's new HA settings: this node's keepalived reloads with them, its engine
        replicates on their port and its Pair keeps them; 409 with why not (422 for a value
        this node finds not valid)."""
        try:
            await cluster.take_settings(
                body.advert_interval,
                body.preempt,
                author=caller(request).user,
                replication_port=body.replication_port,
            )
        except PairError as error:
            raise HTTPException(409, str(error)) from None

    return api
