"""Management lockdown (``balancer.front.lockdown``): the networks that may reach the WebUI and
the API, the node setting ``management_allow``. A change that would shut out the caller's own
address is refused; on the Unix socket every change is taken."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from balancer.front import lockdown
from balancer.front.bodies import RequestBody
from balancer.front.gate import Author
from balancer.model import NodeSettings
from balancer.store import Store


class NewLockdown(RequestBody):
    management_allow: list[str] = Field(
        description="networks (CIDR, host bits zero) that may reach the WebUI and the API; "
        "empty: every network"
    )


class LockdownSettings(BaseModel):
    management_allow: list[str]
    # The address this request came from, which a change must keep in; null on the Unix socket.
    address: str | None


def router(store: Store) -> APIRouter:
    api = APIRouter(prefix="/api/v1", tags=["system"])

    def shown(node: NodeSettings, request: Request) -> LockdownSettings:
        networks = [str(network) for network in node.management_allow]
        return LockdownSettings(management_allow=networks, address=lockdown.address_of(request))

    @api.get(
        "/lockdown", response_model=LockdownSettings, summary="Who may reach the WebUI and API"
    )
    def show(request: Request) -> LockdownSettings:
        return shown(store.node_settings(), request)

    @api.put(
        "/lockdown",
        response_model=LockdownSettings,
        summary="Set the networks that may reach the WebUI and the API (empty: every network)",
    )
    def change(request: Request, user: Author, body: NewLockdown) -> LockdownSettings:
        address = lockdown.address_of(request)
        return shown(lockdown.save(store, body.management_allow, address, author=user), request)

    return api
