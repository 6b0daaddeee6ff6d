"""Routes, named as the guide names things: virtual services, real servers, commit."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Body, FastAPI, Header, Query, Request, Response
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, Field

from balancer import backup as backups
from balancer import configuration, logs, words
from balancer.api import users
from balancer.controller import Controller
from balancer.engines.logs import search
from balancer.front import bodies
from balancer.front.gate import Author
from balancer.model import Config, RealServer, RealServerState, VirtualService
from balancer.presets.psm import add_psm
from balancer.state import Overview
from balancer.store import Store
from balancer.system import System, SystemFigures

Base = Annotated[
    int | None,
    Header(alias="If-Match", description="the revision this change was based on; 409 if stale"),
]

# How many entries one answer lists: enough for any screen, bounded for the database's sake.
Limit = Annotated[int, Query(ge=1, le=10_000)]

BACKUP_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {"type": "object", "description": "a document from GET /api/v1/backup"}
        }
    },
}


class Saved(BaseModel):
    revision: int
    pending: bool = True


class PsmPreset(BaseModel):
    rdp_vip: str = Field(description="address of VIP 1, CyberArk-PSM (RDP)")
    web_vip: str = Field(description="address of VIP 2, CyberArk-PSM-Web (HTML5 gateway)")
    servers: list[tuple[str, str]] = Field(description="PSM servers as [label, ip] pairs")
    recommended: bool = Field(False, description="CyberArk's least connections + RDP check")
    rdp_port: int = 3389
    web_port: int = 443
    check_port: int | None = Field(None, description="health check port; default web_port")


class StateChange(BaseModel):
    state: RealServerState


def install(
    app: FastAPI,
    store: Store,
    controller: Controller,
    system: System,
    data_dir: Path,
    shutdown: Callable[[bool], None],
) -> None:
    """The API's routes, under /api/v1."""
    api = APIRouter(prefix="/api/v1")

    def save(
        config: Config, base: int | None, user: str, message: str, action: str, target: str
    ) -> Saved:
        head = store.head()
        revision = store.save(
            config,
            base=head.id if base is None else base,
            author=user or "local",
            message=message,
            action=action,
            target=target,
        )
        return Saved(revision=revision.id)

    def head() -> Config:
        return store.head().config

    @api.get("/status", response_model=Overview, summary="System Overview")
    async def status() -> Overview:
        return await controller.overview()

    @api.get("/virtual-services", response_model=list[VirtualService])
    def list_services() -> tuple[VirtualService, ...]:
        return head().virtual_services

    @api.post("/virtual-services", response_model=Saved, status_code=201)
    def add_service(
        body: Annotated[dict[str, Any], Body()], user: Author, base: Base = None
    ) -> Saved:
        config = configuration.add_virtual_service(head(), body)
        return save(
            config,
            base,
            user,
            f"add virtual service {body.get('label')}",
            "add",
            str(body.get("label")),
        )

    @api.get("/virtual-services/{label}", response_model=VirtualService)
    def show_service(label: str) -> VirtualService:
        vs = head().virtual_service(label)
        if vs is None:
            raise configuration.Missing("label", f"there is no virtual service {label!r}")
        return vs

    @api.patch("/virtual-services/{label}", response_model=Saved)
    def modify_service(
        label: str, body: Annotated[dict[str, Any], Body()], user: Author, base: Base = None
    ) -> Saved:
        config = configuration.modify_virtual_service(head(), label, body)
        return save(config, base, user, f"modify virtual service {label}", "modify", label)

    @api.delete("/virtual-services/{label}", response_model=Saved)
    def remove_service(label: str, user: Author, base: Base = None) -> Saved:
        config = configuration.remove_virtual_service(head(), label)
        return save(config, base, user, f"remove virtual service {label}", "remove", label)

    @api.get("/virtual-services/{label}/real-servers", response_model=list[RealServer])
    def list_servers(label: str) -> tuple[RealServer, ...]:
        return show_service(label).real_servers

    @api.post("/virtual-services/{label}/real-servers", response_model=Saved, status_code=201)
    def add_server(
        label: str, body: Annotated[dict[str, Any], Body()], user: Author, base: Base = None
    ) -> Saved:
        config = configuration.add_real_server(head(), label, body)
        target = f"{label}/{body.get('label')}"
        return save(config, base, user, f"add real server {target}", "add", target)

    @api.patch("/virtual-services/{label}/real-servers/{server}", response_model=Saved)
    def modify_server(
        label: str,
        server: str,
        body: Annotated[dict[str, Any], Body()],
        user: Author,
        base: Base = None,
    ) -> Saved:
        config = configuration.modify_real_server(head(), label, server, body)
        target = f"{label}/{server}"
        return save(config, base, user, f"modify real server {target}", "modify", target)

    @api.delete("/virtual-services/{label}/real-servers/{server}", response_model=Saved)
    def remove_server(label: str, server: str, user: Author, base: Base = None) -> Saved:
        config = configuration.remove_real_server(head(), label, server)
        target = f"{label}/{server}"
        return save(config, base, user, f"remove real server {target}", "remove", target)

    @api.post(
        "/virtual-services/{label}/real-servers/{server}/state",
        response_model=Saved,
        summary="Drain, halt or bring online now (no commit needed)",
    )
    async def set_state(label: str, server: str, body: StateChange, user: Author) -> Saved:
        revision = await controller.set_state(label, server, body.state, user)
        pending = controller.pending()
        return Saved(revision=revision.id, pending=pending.head != pending.applied)

    @api.get("/virtual-services/{label}/persistence")
    async def persistence(label: str) -> list[dict[str, Any]]:
        show_service(label)
        return await controller.persistence(label)

    @api.delete("/virtual-services/{label}/persistence")
    async def clear_persistence(label: str, user: Author) -> dict[str, int]:
        show_service(label)
        cleared = await controller.clear_persistence(label)
        store.audit(
            author=user, action="clear_persistence", target=label, detail={"cleared": cleared}
        )
        return {"cleared": cleared}

    @api.post(
        "/presets/psm",
        response_model=Saved,
        status_code=201,
        summary="The CyberArk PSM preset: both VIPs of the guide",
    )
    def psm(body: PsmPreset, user: Author, base: Base = None) -> Saved:
        config = add_psm(head(), **body.model_dump())
        return save(config, base, user, "add CyberArk PSM preset", "preset", "psm")

    @api.get("/changes", summary="Saved but not yet committed")
    def changes() -> dict[str, Any]:
        """``changes`` in the guide's words, as the Commit box lists them; ``items`` the same
        changes for programs: where, from what, to what, and whether it needs a reload."""
        pending = controller.pending()
        return {
            "head": pending.head,
            "applied": pending.applied,
            "changes": [words.said(c) for c in pending.changes],
            "items": [
                {"path": c.path, "before": c.before, "after": c.after, "runtime": c.runtime}
                for c in pending.changes
            ],
        }

    @api.post("/commit", summary="Apply the saved configuration (the guide's Reload)")
    async def commit(user: Author) -> dict[str, Any]:
        applied = await controller.commit(user)
        return {"revision": applied.revision, "at": applied.at, "by": applied.author}

    @api.get("/config", response_model=Config, summary="View Configuration: as saved")
    def config() -> Config:
        return head()

    @api.get(
        "/config/engine",
        summary="View Configuration: as the engine runs it (haproxy.cfg for HAProxy)",
        response_class=PlainTextResponse,
    )
    async def engine_config() -> str:
        return await controller.configuration()

    @api.get("/backup", summary="Download the whole configuration as a backup document")
    def backup() -> dict[str, Any]:
        return store.export()

    @api.post(
        "/restore",
        response_model=Saved,
        summary="Restore a backup document",
        openapi_extra={"requestBody": BACKUP_BODY},
    )
    async def restore(request: Request, user: Author, base: Base = None) -> Saved:
        # Read as bytes, not parsed by FastAPI, so that the limits a backup file gets in the
        # WebUI (size, depth, a key named twice) hold here too.
        document = backups.read(await bodies.read(request, backups.MAX_SIZE, "body"), "body")
        revision = store.restore(
            document, base=store.head().id if base is None else base, author=user
        )
        return Saved(revision=revision.id)

    @api.get("/revisions")
    def revisions(limit: Limit = 20) -> list[dict[str, Any]]:
        return [
            {"id": r.id, "created": r.created, "author": r.author, "message": r.message}
            for r in store.revisions(limit)
        ]

    @api.get("/audit", summary="The audit trail, newest first")
    def audit(
        limit: Limit = 100, author: str | None = None, text: str | None = None
    ) -> list[dict[str, Any]]:
        return logs.audit_trail(store, limit=limit, author=author, text=text)

    @api.get("/logs", summary="The engine's and the appliance's logs, newest first")
    def read_logs(
        limit: Limit = 200, source: str | None = None, text: str | None = None
    ) -> list[dict[str, Any]]:
        return search(data_dir / "logs", source=source, text=text, limit=limit)

    @api.get("/system", response_model=SystemFigures, summary="Bandwidth, load and memory")
    async def system_figures() -> SystemFigures:
        return system.figures()

    @api.post(
        "/shutdown",
        status_code=202,
        response_class=Response,
        responses={202: {"content": None, "description": "stopping"}},
        summary="Stop the management daemon",
    )
    def stop(user: Author, engine: bool = False) -> Response:
        store.audit(author=user, action="shutdown", detail={"engine": engine})
        shutdown(engine)
        return Response(status_code=202)

    app.include_router(api)
    app.include_router(users.router(store))
