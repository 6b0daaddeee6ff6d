"""Routes for two-factor sign-in: which roles must have a second factor, and an
administrator's reset of a user's (a lost phone with its recovery codes). A user enrols in the
WebUI, where the QR code is shown."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from pydantic import Field

from balancer.front.bodies import RequestBody
from balancer.front.gate import Author
from balancer.roles import Role
from balancer.store import Store


class Required(RequestBody):
    required: list[Role] = Field(
        description="the roles whose users must sign in with a second factor; a user of one "
        "without it is sent to enrol right after the password"
    )


def router(store: Store) -> APIRouter:
    api = APIRouter(prefix="/api/v1", tags=["users"])

    @api.get("/two-factor", summary="Which roles must sign in with a second factor")
    def required() -> dict[str, Any]:
        return {"required": sorted(store.two_factor_required())}

    @api.put("/two-factor", summary="Set which roles must sign in with a second factor")
    def set_required(body: Required, user: Author) -> dict[str, Any]:
        store.set_two_factor_required(frozenset(body.required), author=user)
        return {"required": sorted(store.two_factor_required())}

    @api.delete(
        "/users/{name}/two-factor",
        status_code=204,
        summary="Reset a user's second factor: they sign in with the password alone, or enrol "
        "again if their role must have one",
    )
    def reset(name: str, user: Author) -> Response:
        store.set_two_factor(name, None, author=user, action="two_factor_reset")
        return Response(status_code=204)

    return api
