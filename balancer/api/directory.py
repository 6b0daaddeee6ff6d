"""Routes for directory sign-in (Local Configuration > Remote Authentication): its settings,
and a test that says in one line what works or exactly what failed. The secret (the search
account's password, RADIUS's shared secret) is taken, never given back: "secret" answers "set"."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import Field

from balancer import directory
from balancer.front.bodies import RequestBody
from balancer.front.gate import Author
from balancer.store import Store

Document = Annotated[
    dict[str, Any],
    Body(
        description='the settings, by "kind" (ldap, ldaps, starttls, radius), and "secret": '
        "the search account's password or RADIUS's shared secret (left out or empty: the saved "
        "one is kept)"
    ),
]


class Trial(RequestBody):
    name: str = Field(default="", max_length=256, description="empty: only reach and bind")
    password: str = Field(default="", max_length=1024)


def router(store: Store) -> APIRouter:
    api = APIRouter(prefix="/api/v1/directory", tags=["directory"])

    @api.get("", summary="Directory sign-in's settings; never the secret")
    def show() -> dict[str, Any]:
        return directory.shown(store)

    @api.put("", summary="Set directory sign-in up (all its settings)")
    def set_up(body: Document, user: Author) -> dict[str, Any]:
        secret = body.get("secret")
        if secret is not None and not isinstance(secret, str):
            raise HTTPException(422, "secret: must be text")
        settings = {k: v for k, v in body.items() if k not in ("secret", "enabled")}
        directory.save(store, settings, secret, author=user)
        return directory.shown(store)

    @api.delete("", status_code=204, summary="Turn directory sign-in off")
    def turn_off(user: Author) -> Response:
        directory.save(store, None, None, author=user)
        return Response(status_code=204)

    @api.post("/test", summary="Sign a user in as a test: what works, or what failed")
    async def test(trial: Trial, user: Author) -> dict[str, Any]:
        found = await run_in_threadpool(directory.configured, store)
        if found is None:
            raise HTTPException(409, "directory sign-in is not set up")
        try:
            said = await run_in_threadpool(directory.test, *found, trial.name, trial.password)
            verdict = {"ok": True, "reason": None, "said": said}
        except directory.Refused as error:
            verdict = {"ok": False, "reason": error.reason, "said": str(error)}
        detail = {"ok": verdict["ok"], "reason": verdict["reason"]}
        store.audit(author=user, action="directory_test", target=trial.name, detail=detail)
        return verdict

    return api
