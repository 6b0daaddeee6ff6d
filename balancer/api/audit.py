"""Whether the audit trail is whole: its hash chain checked entry by entry
(``balancer.store.audit_chain``), as ``balancer audit verify`` and the Logs page say it."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from balancer.store import Store


class AuditVerdict(BaseModel):
    whole: bool
    entries: int
    # The first entry edited or removed; null when the chain is whole.
    broken_at: int | None
    # The newest entry's chain: noted elsewhere, it shows later whether the trail was rewritten.
    head: str
    said: str


def router(store: Store) -> APIRouter:
    api = APIRouter(prefix="/api/v1", tags=["system"])

    @api.get(
        "/audit/verify", response_model=AuditVerdict, summary="Whether the audit trail is whole"
    )
    async def verify() -> AuditVerdict:
        # Every entry is hashed: a long trail takes a while, away from the event loop.
        verdict = await run_in_threadpool(store.verify_audit)
        return AuditVerdict(
            whole=verdict.whole,
            entries=verdict.entries,
            broken_at=verdict.broken_at,
            head=verdict.head,
            said=verdict.said(),
        )

    return api
