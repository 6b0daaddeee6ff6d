"""View Configuration: the saved configuration as an operator reads it (each virtual service's
settings by the guide's names, then its real servers), what a commit would change where the
running revision differs, haproxy.cfg where the engine is HAProxy (the built-in engine runs
the configuration as shown), and the recent revisions and who made them. Read only."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from balancer import help, words
from balancer.engines import EngineError
from balancer.model import Config
from balancer.store import NotFound, Revision
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
        engine_text, engine_error = "", None
        if controller.engine.name == "haproxy":  # its own form: the built-in runs the above
            try:
                engine_text = await controller.configuration()
            except EngineError as error:
                engine_error = str(error)
        return render(
            request,
            "view_configuration.html",
            title=TITLE,
            status=422 if problem else 200,
            problem=problem,
            shown=_revision(shown),
            head=pending.head,
            running=_revision(running, text=False) if running and running.id != shown.id else None,
            applied=pending.applied,
            changes=[words.said(change) for change in pending.changes],
            engine=controller.engine.name,
            engine_text=engine_text,
            engine_error=engine_error,
            revisions=[_revision(r, text=False) for r in store.revisions(RECENT)],
            server_columns=[words.name(f, server=True) for f in SERVER_COLUMNS[:-1]] + ["State"],
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
        "services": _readable(revision.config) if text else [],
    }


def _readable(config: Config) -> list[dict[str, Any]]:
    """Each virtual service's settings as (the guide's name, the value as the form shows it),
    and its real servers' rows."""
    services = []
    for service in config.model_dump(mode="json")["virtual_services"]:
        settings = []
        for field, about in help.VIRTUAL_SERVICE.items():
            value = _at(service, field)
            if field == "label" or (value is None and not about.default):
                continue  # the label heads the service; a setting not used is not shown
            if field == "health_check.type":
                shown = words.check_type(value, service["health_check"]["method"])
            else:
                shown = about.default if value is None else words.shown(field, value)
            settings.append((about.label, shown))
        servers = [
            [words.shown(field, server.get(field)) for field in SERVER_COLUMNS]
            for server in service["real_servers"]
        ]
        services.append({"label": service["label"], "settings": settings, "servers": servers})
    return services


SERVER_COLUMNS = ("label", "ip", "port", "weight", "max_connections", "state")


def _at(document: dict[str, Any], path: str) -> Any:
    for step in path.split("."):
        document = document.get(step) if isinstance(document, dict) else None  # type: ignore[assignment]
    return document
