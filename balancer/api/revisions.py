"""Routes for revisions: what is saved but not committed, committing it, the configuration as
saved and as the engine runs it, backup and restore, and the list of revisions.

On the Primary of an HA pair a commit's answer says whether the Secondary applied the revision
too (``secondary``), after waiting a few seconds for it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse

from balancer import backup as backups
from balancer import words
from balancer.api.edits import Base, Edits, Limit, Saved
from balancer.controller import Controller
from balancer.edits import Edit
from balancer.front import bodies
from balancer.front.gate import Author
from balancer.model import Config
from balancer.pair.syncer import ANSWER_WAIT, Syncer, answer_json

BACKUP_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {"type": "object", "description": "a document from GET /api/v1/backup"}
        }
    },
}


def router(edits: Edits, controller: Controller, syncer: Callable[[], Syncer | None]) -> APIRouter:
    """``syncer``: the Primary's running sync with its Secondary, if any."""
    api = APIRouter(prefix="/api/v1", tags=["revisions"])
    store = edits.store

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
        done = {"revision": applied.revision, "at": applied.at, "by": applied.author}
        running = syncer()
        if running is not None:
            done["secondary"] = answer_json(await running.answer(applied.revision, ANSWER_WAIT))
        return done

    @api.get("/config", response_model=Config, summary="View Configuration: as saved")
    def config() -> Config:
        return edits.head()

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
        return edits.save(Edit.restore(document), base, user)

    @api.get("/revisions")
    def revisions(limit: Limit = 20) -> list[dict[str, Any]]:
        return [
            # The digest names the revision's content alike on both nodes of an HA pair.
            {
                "id": r.id,
                "created": r.created,
                "author": r.author,
                "message": r.message,
                "digest": r.digest,
            }
            for r in store.revisions(limit)
        ]

    return api
