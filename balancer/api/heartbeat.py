"""Restart Heartbeat and switchover for the operator (the guide's Maintenance > Restart
Services in an HA pair): ``POST /api/v1/ha/heartbeat/restart`` on the Primary restarts keepalived
on both nodes, one at a time, the Passive node first; ``POST /api/v1/ha/switchover`` on either
node makes the other node Active. Each answers once done, in one line, or 409 with the line
that says why not (standalone, on the Secondary, the peer not Passive, ...). Both are audited."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field

from balancer.front.gate import Author
from balancer.pair.cluster import Cluster, PairError
from balancer.pair.maintenance import Action, perform

REFUSED: dict[int | str, dict[str, Any]] = {
    409: {"description": "refused, or failed part-way: why, in one line"}
}


class Done(BaseModel):
    message: str = Field(description="what was done, in one line")


def router(cluster: Cluster) -> APIRouter:
    api = APIRouter(prefix="/api/v1/ha", tags=["high availability"])

    async def run(action: Action, author: str) -> Done:
        try:
            return Done(message=await perform(cluster, action, author=author))
        except PairError as error:
            raise HTTPException(409, str(error)) from None

    @api.post(
        "/heartbeat/restart",
        responses=REFUSED,
        summary="Restart Heartbeat: keepalived on both nodes, one at a time (on the Primary)",
    )
    async def restart_heartbeat(user: Author) -> Done:
        return await run("restart_heartbeat", user)

    @api.post(
        "/switchover",
        responses=REFUSED,
        summary="Switchover: make the other node Active, refusing no new connection",
    )
    async def switchover(user: Author) -> Done:
        return await run("switchover", user)

    return api
