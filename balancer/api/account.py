"""Routes for the caller's own account, whatever their role: their own password."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from pydantic import Field

from balancer import users
from balancer.front.access import Access
from balancer.front.account import change_password
from balancer.front.bodies import RequestBody
from balancer.front.gate import caller


class OwnPassword(RequestBody):
    current: str = Field(
        description="your password now: a session or a key alone does not change it",
        json_schema_extra={"format": "password"},
    )
    password: str = Field(
        description=f"the new password: at least {users.STRONG_LENGTH} characters, not a "
        "common one, not containing your name",
        json_schema_extra={"format": "password"},
    )


def router(access: Access) -> APIRouter:
    api = APIRouter(prefix="/api/v1", tags=["users"])

    @api.put(
        "/account/password",
        status_code=204,
        summary="Change your own password; your WebUI sessions but this one end",
    )
    async def set_own_password(body: OwnPassword, request: Request) -> Response:
        address = request.client.host if request.client else "local"
        await change_password(access, caller(request), body.current, body.password, address)
        return Response(status_code=204)

    return api
