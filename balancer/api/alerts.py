"""Routes for the alert channels (e-mail, webhook, syslog) and their Send test. A channel's
secret (SMTP password, webhook HMAC key) is taken, never given back: "secret" answers "set"."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Response
from fastapi.concurrency import run_in_threadpool

from balancer.alerts import channels, send, subscriber
from balancer.front.gate import Author
from balancer.store import NotFound, Store
from balancer.validate import Invalid, Problem

Document = Annotated[
    dict[str, Any],
    Body(
        description='the channel\'s settings, by "kind" (email, webhook, syslog), and "secret": '
        "the SMTP password or the webhook's HMAC key (left out or empty: the saved one is kept)"
    ),
]
Changes = Annotated[
    dict[str, Any],
    Body(
        description='only the settings to change (null: back to its default), and "secret" '
        "to set a new one (left out or empty: the saved one is kept); the kind stays"
    ),
]


def router(store: Store) -> APIRouter:
    api = APIRouter(prefix="/api/v1/alerts", tags=["alerts"])

    def found(name: str) -> channels.Channel:
        try:
            return channels.channel(store, name)
        except NotFound as error:
            raise HTTPException(404, str(error)) from None

    def saved(name: str, body: dict[str, Any], author: str) -> dict[str, Any]:
        settings = {k: v for k, v in body.items() if k not in ("name", "secret")}
        secret = body.get("secret")
        if secret is not None and not isinstance(secret, str):
            raise HTTPException(422, "secret: must be text")
        return channels.shown(channels.save(store, name, settings, secret or None, author=author))

    @api.get("/channels", summary="Where alerts are sent; never a secret")
    def list_channels() -> list[dict[str, Any]]:
        return [channels.shown(channel) for channel in channels.channels(store)]

    @api.post("/channels", status_code=201, summary="Add an alert channel")
    def add_channel(body: Document, user: Author) -> dict[str, Any]:
        name = str(body.get("name", ""))
        if any(channel.name == name for channel in channels.channels(store)):
            raise HTTPException(409, f"name: an alert channel named {name} exists already")
        return saved(name, body, user)

    @api.put("/channels/{name}", summary="Change an alert channel (all its settings)")
    def change_channel(name: str, body: Document, user: Author) -> dict[str, Any]:
        found(name)
        return saved(name, body, user)

    @api.patch("/channels/{name}", summary="Change some of an alert channel's settings")
    def amend_channel(name: str, body: Changes, user: Author) -> dict[str, Any]:
        current = found(name).settings
        if body.get("kind", current.kind) != current.kind:
            reason = f"{name} is {current.kind}: remove it and add another, or PUT it whole"
            raise Invalid([Problem("kind", reason)])
        merged = {**current.model_dump(mode="json"), **body}
        return saved(name, {k: v for k, v in merged.items() if v is not None}, user)

    @api.delete("/channels/{name}", status_code=204, summary="Remove an alert channel")
    def remove_channel(name: str, user: Author) -> Response:
        found(name)
        store.remove_alert_channel(name, author=user)
        return Response(status_code=204)

    @api.post("/channels/{name}/test", summary="Send test: one message, one try, now")
    async def test_channel(name: str, user: Author) -> dict[str, Any]:
        channel = await run_in_threadpool(found, name)
        node = (await run_in_threadpool(store.node_settings)).hostname
        try:
            await subscriber.test(channel, node)
        except send.SendFailed as error:
            raise HTTPException(502, f"{name}: not sent: {error}") from None
        return {"channel": name, "sent": True}

    return api
