"""Support (the guide's Support menu): the support download, one archive of what whoever helps
an operator asks for first, every secret redacted; the same archive as
GET /api/v1/support/archive, audited with who downloaded it."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from balancer import support
from balancer.front.gate import Author
from balancer.web.render import Renderer

PAGE = "/lbadmin/support"


def router(render: Renderer) -> APIRouter:
    web = APIRouter(include_in_schema=False)

    @web.get(PAGE)
    def support_page(request: Request) -> Response:
        return render(
            request,
            "support.html",
            title="Support",
            log_mib=support.LOG_MAX >> 20,
            days=support.AUDIT_DAYS,
        )

    @web.get(f"{PAGE}/archive")
    async def download(user: Author) -> Response:
        name, data = await support.archive(
            render.store, render.controller, render.cluster, author=user
        )
        return Response(
            data,
            media_type=support.MEDIA_TYPE,
            headers=support.attachment(name),
        )

    return web
