"""Routes for users and their API keys (the guide's Maintenance > Passwords)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response
from pydantic import Field

from balancer import totp, users
from balancer.front.bodies import RequestBody
from balancer.front.gate import Author, caller
from balancer.roles import Role
from balancer.store import Store

# A key's id is an SQLite row id: a bigger number names no key, and SQLite cannot take it.
KeyId = Annotated[int, Path(ge=1, le=2**63 - 1)]
Password = Field(min_length=1, json_schema_extra={"format": "password"})


class NewUser(RequestBody):
    name: str
    password: str = Password
    role: Role = Field(Role.ADMINISTRATOR, description="what the user may do")


class NewPassword(RequestBody):
    password: str = Password


class NewRole(RequestBody):
    role: Role


class NewApiKey(RequestBody):
    name: str = Field(description="what the key is for, e.g. 'monitoring'")
    owner: str | None = Field(None, description="whose key it is; default: yours")
    role: Role | None = Field(
        None, description="a narrower role than the owner's, never a wider one; default: theirs"
    )
    code: str | None = Field(
        None,
        description="the code your authenticator app shows now: needed from a WebUI session "
        "of a user with two-factor sign-in",
    )


def router(store: Store) -> APIRouter:
    api = APIRouter(prefix="/api/v1", tags=["users"])

    @api.get("/users", summary="Users of the WebUI and the API")
    def list_users() -> list[dict[str, Any]]:
        return [asdict(user) for user in store.users()]

    @api.post("/users", status_code=201, summary="Add a user")
    def add_user(body: NewUser, user: Author) -> dict[str, Any]:
        return asdict(users.add_user(store, body.name, body.password, body.role, author=user))

    @api.put("/users/{name}/password", status_code=204, summary="Change a user's password")
    def set_password(name: str, body: NewPassword, user: Author) -> Response:
        users.set_password(store, name, body.password, author=user)
        return Response(status_code=204)

    @api.put(
        "/users/{name}/role",
        status_code=204,
        summary="Change a user's role: at once, for their sessions and API keys too",
    )
    def set_role(name: str, body: NewRole, user: Author) -> Response:
        store.set_role(name, body.role, author=user)
        return Response(status_code=204)

    @api.delete("/users/{name}", status_code=204, summary="Remove a user and revoke their keys")
    def remove_user(name: str, user: Author) -> Response:
        store.remove_user(name, author=user)
        return Response(status_code=204)

    @api.get("/api-keys", summary="API keys, revoked ones too; never the keys themselves")
    def list_keys() -> list[dict[str, Any]]:
        return [asdict(key) for key in store.api_keys()]

    @api.post(
        "/api-keys",
        status_code=201,
        summary="Make an API key: its text is in this answer only, and never kept",
    )
    def add_key(body: NewApiKey, request: Request, user: Author) -> dict[str, Any]:
        # A key is a password that needs no second factor: a session makes one only with a
        # code, so a stolen session cookie cannot. A key cannot ask its holder for one.
        if caller(request).via == "session":
            totp.require_code(store, user, body.code)
        owner = body.owner or user
        made, key = users.add_api_key(store, body.name, owner, body.role, author=user)
        return {**asdict(made), "key": key}

    @api.delete("/api-keys/{id}", summary="Revoke an API key, at once")
    def revoke_key(id: KeyId, user: Author) -> dict[str, Any]:
        return asdict(store.revoke_api_key(id, author=user))

    return api
