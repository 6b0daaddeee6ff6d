"""Maintenance > Backup & Restore and Restart Services.

Backup is the API's backup document as a file; restore reads an uploaded one (``backup.read``:
size, depth, duplicate keys) and saves it through ``Store.restore`` as the API does, so a bad
file changes nothing and is refused naming the field and the reason. A restored configuration
is a new revision waiting in the "Commit changes" box, like any other change.

Restart Services offers what the controller and the daemon can do, each with what it does to
live connections; the disruptive ones are confirmed first. In an HA pair it also offers the
guide's Restart Heartbeat (on the Primary, for both nodes) and a switchover (on either node).
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
from balancer.pair.cluster import PairError
from balancer.pair.maintenance import Action, perform
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
    "heartbeat": {
        "title": "Restart Heartbeat",
        "button": "Restart Heartbeat",
        "effect": "Restarts keepalived on both nodes of the HA pair, one at a time, the Passive "
        "node first, so the floating IPs are always held and no new connection is refused. The "
        "Active node hands them to the other node, which stays Active: connections open "
        "through it end (RDP users reconnect).",
        "confirm": True,
    },
    "switchover": {
        "title": "Switchover",
        "button": "Switch over",
        "effect": "Makes the other node of the HA pair Active: the Active node hands the floating "
        "IPs over gracefully, so no new connection is refused; connections open through it end "
        "(RDP users reconnect). Refused unless the other node is Passive.",
        "confirm": True,
    },
}
# The HA pair's actions, by the name the audit and the API give them.
PAIRED: dict[str, Action] = {"heartbeat": "restart_heartbeat", "switchover": "switchover"}


def router(render: Renderer) -> APIRouter:
    web = APIRouter(include_in_schema=False)
    store, controller, cluster = render.store, render.controller, render.cluster

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

    def unavailable(request: Request) -> dict[str, str]:
        """Why an action is not offered on this node, by action."""
        why = {}
        if management.of(request) is None:
            why["management"] = "Not available here: this WebUI runs without the management daemon."
        part = cluster.pair
        if part is None:
            alone = "Only in an HA pair (Cluster Configuration > High-Availability Configuration)."
            why.update({name: alone for name in PAIRED})
        elif part.role != "primary":
            why["heartbeat"] = "Done on the Primary, which restarts both nodes."
        return why

    def restart_page(request: Request, *, status: int = 200, **context: Any) -> Response:
        return render(
            request,
            "maintenance_restart.html",
            status=status,
            title="Restart Services",
            actions=ACTIONS,
            engine=controller.engine.name,
            unavailable=unavailable(request),
            **context,
        )

    @web.get(RESTART)
    def restart_shown(request: Request, done: str = "") -> Response:
        title = ACTIONS.get(done, {}).get("title")
        return restart_page(request, done=title and f"{title}: done.")

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
        if action in PAIRED:
            try:
                said = await perform(cluster, PAIRED[action], author=user)
            except PairError as error:
                return restart_page(request, status=409, error=f"{chosen['title']}: {error}")
            return restart_page(request, done=f"{chosen['title']}: {said}")
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
