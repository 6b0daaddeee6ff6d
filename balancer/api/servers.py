"""Routes for a virtual service's real servers, and draining, halting or bringing one online."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body

from balancer.api.edits import Base, Edits, Saved
from balancer.controller import Controller
from balancer.edits import Edit
from balancer.front.bodies import RequestBody
from balancer.front.gate import Author
from balancer.model import RealServer, RealServerState


class StateChange(RequestBody):
    state: RealServerState


def router(edits: Edits, controller: Controller) -> APIRouter:
    api = APIRouter(prefix="/api/v1", tags=["real servers"])

    @api.get("/virtual-services/{label}/real-servers", response_model=list[RealServer])
    def list_servers(label: str) -> tuple[RealServer, ...]:
        return edits.service(label).real_servers

    @api.post("/virtual-services/{label}/real-servers", response_model=Saved, status_code=201)
    def add_server(
        label: str, body: Annotated[dict[str, Any], Body()], user: Author, base: Base = None
    ) -> Saved:
        return edits.save(Edit.add_real_server(label, body), base, user)

    @api.patch("/virtual-services/{label}/real-servers/{server}", response_model=Saved)
    def modify_server(
        label: str,
        server: str,
        body: Annotated[dict[str, Any], Body()],
        user: Author,
        base: Base = None,
    ) -> Saved:
        return edits.save(Edit.modify_real_server(label, server, body), base, user)

    @api.delete("/virtual-services/{label}/real-servers/{server}", response_model=Saved)
    def remove_server(label: str, server: str, user: Author, base: Base = None) -> Saved:
        return edits.save(Edit.remove_real_server(label, server), base, user)

    @api.post(
        "/virtual-services/{label}/real-servers/{server}/state",
        response_model=Saved,
        summary="Drain, halt or bring online now (no commit needed)",
    )
    async def set_state(label: str, server: str, body: StateChange, user: Author) -> Saved:
        revision = await controller.set_state(label, server, body.state, user)
        pending = controller.pending()
        return Saved(revision=revision.id, pending=pending.head != pending.applied)

    return api
