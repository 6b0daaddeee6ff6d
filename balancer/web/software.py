"""Maintenance > Software Update (the guide's 8.4.2 Offline Update): upload an archive and its
checksum, read the check's verdict, confirm a downgrade, Install; Roll back; the online check.

The API's routes (``balancer.api.update``) do the same through the same ``software.Software``;
a refusal is shown naming its reason, and changes nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from starlette.responses import RedirectResponse, Response

from balancer import management, software, update
from balancer.front.gate import Author
from balancer.validate import Invalid
from balancer.web import uploads
from balancer.web.render import Renderer
from balancer.web.units import moment

SOFTWARE = "/lbadmin/maintenance/software"
# Read whole into memory as the form arrives; a release is some tens of MB.
MAX_UPLOAD = 256 << 20
Field = Annotated[str, Form()]


def router(render: Renderer) -> APIRouter:
    web = APIRouter(include_in_schema=False)
    store = render.store
    installer = software.of(store.path.parent)

    def page(request: Request, *, status_code: int = 200, **context: Any) -> Response:
        shown = software.shown(store, installer)
        checked = shown["online"].get("checked")
        return render(
            request,
            "maintenance_software.html",
            status=status_code,
            title="Software Update",
            software=shown,
            checked=moment(checked) if checked else None,
            daemon=management.of(request) is not None,
            max_size=MAX_UPLOAD,
            **context,
        )

    @web.get(SOFTWARE)
    def software_shown(request: Request, saved: str = "") -> Response:
        return page(request, saved=saved == "online")

    @web.post(f"{SOFTWARE}/upload")
    async def upload(request: Request, user: Author) -> Response:
        try:
            sent = await uploads.files(request, MAX_UPLOAD, "archive", "checksum")
        except Invalid as error:
            return page(request, status_code=422, refused=_said(error))
        if not sent["archive"] or not sent["checksum"]:
            return page(request, status_code=422, refused="choose the archive and its checksum")
        async with installer.lock:  # not while an install reads the archive offered
            try:
                checksum = sent["checksum"].decode()
                release = await installer.offer(_once(sent["archive"]), checksum)
            except (update.Refused, UnicodeDecodeError) as refused:
                return page(request, status_code=422, refused=str(refused))
        store.audit(author=user, action="software_offered", target=release.version)
        return RedirectResponse(SOFTWARE, status_code=303)

    @web.post(f"{SOFTWARE}/install")
    async def install(request: Request, user: Author, downgrade: Field = "") -> Response:
        service = management.of(request)
        if service is None:
            return page(request, status_code=409, refused="this WebUI runs without its daemon")
        async with installer.lock:
            try:
                release = await installer.install(downgrade=downgrade == "yes")
            except update.Refused as refused:
                return page(request, status_code=422, refused=str(refused))
        store.audit(
            author=user,
            action="software_install",
            target=release.version,
            detail={"previous": release.running, "downgrade": release.downgrade},
        )
        service.restart()
        return render(
            request,
            "maintenance_software_restarting.html",
            title="Software Update",
            done=f"Balancer {release.version} is installed",
        )

    @web.post(f"{SOFTWARE}/rollback")
    async def rollback(request: Request, user: Author) -> Response:
        service = management.of(request)
        if service is None:
            return page(request, status_code=409, refused="this WebUI runs without its daemon")
        async with installer.lock:
            try:
                version = installer.rollback()
            except update.Refused as refused:
                return page(request, status_code=409, refused=str(refused))
        store.audit(author=user, action="software_rollback", target=version)
        service.restart()
        return render(
            request,
            "maintenance_software_restarting.html",
            title="Software Update",
            done=f"Rolled back to Balancer {version}",
        )

    @web.post(f"{SOFTWARE}/online")
    async def online(
        request: Request, user: Author, url: Field = "", action: Field = "save"
    ) -> Response:
        try:
            software.save_url(store, url.strip() or None, user)
        except Invalid as error:
            return page(request, status_code=422, problems=error.problems, url=url)
        chosen = store.node_settings().update_url
        if action == "check" and chosen:
            await installer.check_online(chosen)
        return RedirectResponse(f"{SOFTWARE}?saved=online", status_code=303)

    return web


def _said(error: Invalid) -> str:
    problem = error.problems[0]
    return f"{problem.field}: {problem.reason}" if problem.field else problem.reason


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data
