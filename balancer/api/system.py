"""Routes for the node itself: System Overview, its figures, the logs and the audit trail, and
stopping the management daemon."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Response

from balancer import logs
from balancer.api.edits import Limit
from balancer.controller import Controller
from balancer.engines.logs import search
from balancer.front.gate import Author
from balancer.state import Overview
from balancer.store import Store
from balancer.system import System, SystemFigures


def router(
    store: Store,
    controller: Controller,
    system: System,
    data_dir: Path,
    shutdown: Callable[[bool], None],
) -> APIRouter:
    api = APIRouter(prefix="/api/v1", tags=["system"])

    @api.get("/status", response_model=Overview, summary="System Overview")
    async def status() -> Overview:
        return await controller.overview()

    @api.get("/system", response_model=SystemFigures, summary="Bandwidth, load and memory")
    async def system_figures() -> SystemFigures:
        return system.figures()

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

    return api
