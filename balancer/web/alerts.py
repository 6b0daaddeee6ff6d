"""Local Configuration > Alerts: where this node sends its alerts (e-mail, webhook, syslog),
each with Send test. A secret (SMTP password, webhook HMAC key) is written here and never shown
back; the same channels as /api/v1/alerts/channels and `balancer alerts`."""

from __future__ import annotations

import contextlib
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from balancer.alerts import channels, send, subscriber
from balancer.front.gate import Author
from balancer.store import NotFound
from balancer.validate import Invalid, Problem
from balancer.web.render import Renderer

PAGE = "/lbadmin/local-configuration/alerts"
# The form's fields that are a channel's settings, by kind; the rest of a form is ignored, and
# a change keeps the settings no form has (an e-mail's ca_file, a syslog's facility and path).
FIELDS = {
    "email": ("host", "port", "starttls", "username", "sender", "recipients"),
    "webhook": ("url",),
    "syslog": ("transport", "host", "port"),
}


def router(render: Renderer) -> APIRouter:
    web = APIRouter(include_in_schema=False)
    store = render.store

    def page(request: Request, *, status: int = 200, **context: Any) -> Response:
        shown = [channels.shown(channel) for channel in channels.channels(store)]
        return render(
            request, "alerts.html", status=status, title="Alerts", channels=shown, **context
        )

    @web.get(PAGE)
    def alerts_page(request: Request, done: str = "", name: str = "", edit: str = "") -> Response:
        if not edit:
            return page(request, done=done, name=name)
        try:
            editing = channels.channel(store, edit)
        except NotFound as error:
            return page(request, status=404, failed=str(error))
        return page(request, editing=channels.shown(editing), form=_form(editing))

    @web.post(f"{PAGE}/{{name}}/change")
    async def change(request: Request, name: str, user: Author) -> Response:
        form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
        try:
            current = channels.channel(store, name)
        except NotFound as error:
            return page(request, status=404, failed=str(error))
        kind = current.settings.kind
        kept = {
            k: v
            for k, v in current.settings.model_dump(mode="json").items()
            if k not in FIELDS[kind]
        }
        try:
            settings = {**kept, **_settings(kind, form)}
            channels.save(store, name, settings, form.get("secret") or None, author=user)
        except Invalid as error:
            shown = {k: v for k, v in form.items() if k not in ("secret", "csrf_token")}
            return page(
                request,
                status=422,
                problems=error.problems,
                form=shown,
                kind=kind,
                editing=channels.shown(current),
            )
        return RedirectResponse(f"{PAGE}?done=changed&name={quote(name)}", status_code=303)

    @web.post(f"{PAGE}/add")
    async def add(request: Request, user: Author) -> Response:
        form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
        kind, name = form.get("kind", ""), form.get("name", "").strip()
        try:
            if any(channel.name == name for channel in channels.channels(store)):
                raise Invalid([Problem("name", f"an alert channel named {name} exists already")])
            settings = _settings(kind, form)
            channels.save(store, name, settings, form.get("secret") or None, author=user)
        except Invalid as error:
            kept = {k: v for k, v in form.items() if k not in ("secret", "csrf_token")}
            return page(request, status=422, problems=error.problems, form=kept, kind=kind)
        return RedirectResponse(f"{PAGE}?done=added&name={quote(name)}", status_code=303)

    @web.post(f"{PAGE}/{{name}}/test")
    async def test(request: Request, name: str, user: Author) -> Response:
        try:
            channel = channels.channel(store, name)
            await subscriber.test(channel, store.node_settings().hostname)
        except (NotFound, send.SendFailed) as error:
            return page(request, status=502, failed=f"{name}: not sent: {error}")
        return RedirectResponse(f"{PAGE}?done=tested&name={quote(name)}", status_code=303)

    @web.post(f"{PAGE}/{{name}}/remove")
    def remove(name: str, user: Author) -> Response:
        # Removed already (by another tab or user) is what was asked.
        with contextlib.suppress(NotFound):
            store.remove_alert_channel(name, author=user)
        return RedirectResponse(f"{PAGE}?done=removed&name={quote(name)}", status_code=303)

    return web


def _settings(kind: str, form: dict[str, str]) -> dict[str, Any]:
    if kind not in FIELDS:
        raise Invalid([Problem("kind", "choose email, webhook or syslog")])
    settings: dict[str, Any] = {"kind": kind}
    for field in FIELDS[kind]:
        value = form.get(f"{kind}_{field}", "").strip()
        if field == "starttls":  # a checkbox: sent only when ticked
            settings[field] = value == "on"
        elif value:
            settings[field] = value.split() if field == "recipients" else value
    return settings


def _form(channel: channels.Channel) -> dict[str, str]:
    """A channel's settings as its form's fields, to change them."""
    kind = channel.settings.kind
    form: dict[str, str] = {}
    for field, value in channel.settings.model_dump(mode="json").items():
        if field in FIELDS[kind]:
            said = " ".join(value) if field == "recipients" else str(value)
            form[f"{kind}_{field}"] = ("on" if value else "") if field == "starttls" else said
    return form
