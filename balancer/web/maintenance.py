"""Maintenance > Backup & Restore and Restart Services.

Backup is the API's backup document as a file; restore reads an uploaded one (``backup.read``:
size, depth, duplicate keys) and saves it through ``Store.restore`` as the API does, so a bad
file changes nothing and is refused naming the field and the reason. A restored configuration
is a new revision waiting in the "Commit changes" box, like any other change.

Restart Services offers what the controller and the daemon can do, each with what it does to
live connections; the disruptive ones are confirmed first.
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from starlette.responses import RedirectResponse, Response

from balancer import backup, management
from balancer.controller import CommitFailed
from balancer.edits import Edit
from balancer.engines import EngineError
from balancer.front.gate import Author
from balancer.store import Conflict, ReadOnly
from balancer.validate import Invalid, Problem
from balancer.web import uploads
from balancer.web.render import Renderer
from balancer.web.units import moment

BACKUP = "/lbadmin/maintenance/backup"
RESTART = "/lbadmin/maintenance/restart"
Field = Annotated[str, Form()]

# What each action does, in the guide's spirit ("Reload HAProxy", "Restart HAProxy"), said the
# same on the page and on its confirmation.
ACTIONS = {
    "reload": {
        "title": "Reload the engine",
        "button": "Reload",
        "effect": "Applies the saved changes (the guide's Commit changes / Reload HAProxy). "
        "Connections already open are kept; only sockets that changed are rebound.",
        "confirm": False,
    },
    "engine": {
        "title": "Restart the engine",
        "button": "Restart the engine",
        "effect": "Stops the data plane and starts it again with the running revision. "
        "Every open connection through every virtual service is dropped (RDP users are "
        "disconnected) and persistence is forgotten. Use it only when the engine misbehaves.",
        "confirm": True,
    },
    "management": {
        "title": "Restart the management service",
        "button": "Restart the management service",
        "effect": "Restarts the WebUI and the API and applies saved service socket addresses. "
        "The engine keeps running: no connection through a virtual service is dropped. "
        "Everyone signed in to the WebUI must sign in again.",
        "confirm": True,
    },
}


def router(render: Renderer) -> APIRouter:
    web = APIRouter(include_in_schema=False)
    store, controller = render.store, render.controller

    def backup_page(request: Request, *, status: int = 200, **context: Any) -> Response:
        head = store.head()
        return render(
            request,
            "maintenance_backup.html",
            status=status,
            title="Backup & Restore",
            head={"id": head.id, "created": moment(head.created), "author": head.author},
            max_size=backup.MAX_SIZE,
            **context,
        )

    @web.get(BACKUP)
    def backup_shown(request: Request, restored: int | None = None) -> Response:
        return backup_page(request, restored=restored)

    @web.get(f"{BACKUP}/download")
    def download() -> Response:
        document = store.export()
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        name = f"balancer-{store.node_settings().hostname}-r{document['revision']}-{stamp}.json"
        return Response(
            json.dumps(document, indent=2) + "\n",
            media_type="application/json",
            headers={"Content-Disposition": f'attachment; filename="{_safe(name)}"'},
        )

    @web.post(f"{BACKUP}/restore")
    async def restore(request: Request, user: Author) -> Response:
        try:
            data = (await uploads.files(request, backup.MAX_SIZE, "file"))["file"]
            if not data:
                raise Invalid([Problem("file", "choose a backup file to restore")])
            document = backup.read(data)
            revision = controller.save(Edit.restore(document), base=None, author=user)
        except (Invalid, Conflict) as error:
            problems = error.problems if isinstance(error, Invalid) else [Problem("", str(error))]
            return backup_page(request, status=422, problems=problems)
        return RedirectResponse(f"{BACKUP}?restored={revision.id}", status_code=303)

    def restart_page(request: Request, *, status: int = 200, **context: Any) -> Response:
        return render(
            request,
            "maintenance_restart.html",
            status=status,
            title="Restart Services",
            actions=ACTIONS,
            engine=controller.engine.name,
            available=management.of(request) is not None,
            **context,
        )

    @web.get(RESTART)
    def restart_shown(request: Request, done: str = "") -> Response:
        return restart_page(request, done=ACTIONS.get(done, {}).get("title"))

    @web.post(RESTART)
    async def restart(
        request: Request, user: Author, action: Field = "", confirm: Field = ""
    ) -> Response:
        chosen = ACTIONS.get(action)
        if chosen is None:
            return restart_page(request, status=422, error=f"action: {action!r} is not one")
        if chosen["confirm"] and confirm != "yes":
            return render(
                request,
                "maintenance_confirm.html",
                title="Restart Services",
                action=action,
                chosen=chosen,
            )
        try:
            if action == "reload":
                await controller.commit(user)
            elif action == "engine":
                store.audit(author=user, action="restart_engine", target=controller.engine.name)
                await controller.close(stop_engine=True)
                await controller.start()
                if controller.engine_error is not None:
                    raise EngineError(controller.engine_error)
            else:
                service = management.of(request)
                if service is None:
                    raise EngineError("the management service runs without its daemon here")
                store.audit(author=user, action="restart_management")
                service.restart()
                return render(request, "maintenance_restarting.html", title="Restart Services")
        except (CommitFailed, EngineError, ReadOnly) as error:
            return restart_page(request, status=422, error=f"{chosen['title']}: {error}")
        return RedirectResponse(f"{RESTART}?done={action}", status_code=303)

    return web


def _safe(name: str) -> str:
    """A file name for Content-Disposition: the hostname is the operator's, keep it plain."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
