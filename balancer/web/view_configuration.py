"""View Configuration: the configuration as stored (the saved revision, and the running one
when they differ) and as the engine runs it (haproxy.cfg, or the built-in engine's document),
with the recent revisions and who made them. Read only."""

from __future__ import annotations

import json

from fastapi import APIRouter, Request
from starlette.responses import Response

from balancer.engines import EngineError
from balancer.model import Config
from balancer.store import NotFound, Revision
from balancer.web import words
from balancer.web.render import Renderer
from balancer.web.units import moment

TITLE = "View Configuration"
RECENT = 20  # revisions listed


def router(render: Renderer) -> APIRouter:
    web = APIRouter(include_in_schema=False)
    store, controller = render.store, render.controller

    @web.get("/lbadmin/view-configuration")
    async def view_configuration(request: Request, revision: str = "") -> Response:
        pending = controller.pending()
        problem = None
        try:
            shown = store.revision(_number(revision)) if revision else store.head()
        except (ValueError, NotFound) as error:
            problem, shown = f"revision: {error}", store.head()
        running = store.revision(pending.applied) if pending.applied is not None else None
        try:
            engine_text, engine_error = _readable(await controller.configuration()), None
        except EngineError as error:
            engine_text, engine_error = "", str(error)
        return render(
            request,
            "view_configuration.html",
            title=TITLE,
            status=422 if problem else 200,
            problem=problem,
            shown=_revision(shown),
            head=pending.head,
            running=_revision(running) if running and running.id != shown.id else None,
            applied=pending.applied,
            changes=[words.said(change) for change in pending.changes],
            engine=controller.engine.name,
            engine_text=engine_text,
            engine_error=engine_error,
            revisions=[_revision(r, text=False) for r in store.revisions(RECENT)],
        )

    return web


def _number(revision: str) -> int:
    if not revision.isdigit():
        raise ValueError(f"{revision!r} is not a revision number")
    return int(revision)


def _revision(revision: Revision, *, text: bool = True) -> dict[str, object]:
    return {
        "id": revision.id,
        "created": moment(revision.created),
        "author": revision.author,
        "message": revision.message,
        "text": _stored(revision.config) if text else "",
    }


def _stored(config: Config) -> str:
    """As `balancer config show` prints it, and the API's /config answers."""
    return json.dumps(config.model_dump(mode="json"), indent=2)


def _readable(text: str) -> str:
    """haproxy.cfg as it is; the built-in engine's one-line JSON document indented."""
    try:
        return json.dumps(json.loads(text), indent=2)
    except ValueError:
        return text
