"""Routes for Software Update (the guide's 8.4.2): the archive offered and its check's verdict,
install (then the management service restarts into the new version), Roll back, the versions,
and the online check's URL and answer. A refusal is 422 naming its reason; it changes nothing."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import Field

from balancer import management, software, update
from balancer.front.bodies import RequestBody
from balancer.front.gate import Author
from balancer.store import Store


class OnlineCheck(RequestBody):
    # Required, null included: a misspelt name must not turn the check off.
    url: str | None = Field(max_length=2048, description="a release's latest.json; null: off")


def router(store: Store, installer: software.Software) -> APIRouter:
    api = APIRouter(prefix="/api/v1/software", tags=["software update"])

    def restart(request: Request) -> management.Management:
        found = management.of(request)
        if found is None:
            raise HTTPException(409, "the management service runs without its daemon here")
        return found

    @api.get("", summary="Running, current and previous versions; the archive offered")
    def software_status() -> dict[str, Any]:
        return software.shown(store, installer)

    @api.post(
        "/archive",
        summary="Offer an update archive (the request's body) with its checksum: its verdict",
        openapi_extra={
            "requestBody": {
                "content": {
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
                },
                "required": True,
            },
        },
    )
    async def offer(request: Request, checksum: str, user: Author) -> dict[str, Any]:
        async with installer.lock:  # not while an install reads the archive offered
            try:
                release = await installer.offer(request.stream(), checksum)
            except update.Refused as refused:
                raise HTTPException(422, f"refused: {refused}") from None
        store.audit(author=user, action="software_offered", target=release.version)
        return software.said(release)

    @api.post("/install", status_code=202, summary="Install the archive offered and switch")
    async def install(request: Request, user: Author, downgrade: bool = False) -> dict[str, Any]:
        service = restart(request)
        async with installer.lock:
            try:
                release = await installer.install(downgrade=downgrade)
            except update.Refused as refused:
                raise HTTPException(422, f"refused: {refused}") from None
        await run_in_threadpool(
            store.audit,
            author=user,
            action="software_install",
            target=release.version,
            detail={"previous": release.running, "downgrade": release.downgrade},
        )
        service.restart()
        return {**software.said(release), "restarting": True}

    @api.post("/rollback", status_code=202, summary="Return to the previous version")
    async def rollback(request: Request, user: Author) -> dict[str, Any]:
        service = restart(request)
        async with installer.lock:
            try:
                version = installer.rollback()
            except update.Refused as refused:
                raise HTTPException(409, f"refused: {refused}") from None
        store.audit(author=user, action="software_rollback", target=version)
        service.restart()
        return {"version": version, "restarting": True}

    @api.put("/online", summary="The online check's URL (a release's latest.json); null: off")
    def set_online(user: Author, body: OnlineCheck) -> dict[str, Any]:
        software.save_url(store, body.url, user)
        return software.shown(store, installer)["online"]  # type: ignore[no-any-return]

    # Left out of the schema: fuzzing it would send requests to whatever URL it saved last.
    @api.post("/online/check", include_in_schema=False)
    async def check_online() -> dict[str, Any]:
        url = store.node_settings().update_url
        if not url:
            raise HTTPException(409, "update_url: no online check URL is set")
        return asdict(await installer.check_online(url))

    return api
