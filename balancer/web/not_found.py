"""A WebUI address that is no page: a page of the WebUI's own, with the menu to go on from,
instead of the API's JSON error."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from balancer.api.gate import WEBUI
from balancer.web.render import Renderer


def router(render: Renderer) -> APIRouter:
    """Include last: it answers every GET under /lbadmin/ that no other page does."""
    web = APIRouter(include_in_schema=False)

    @web.get(WEBUI + "{path:path}")
    def not_found(request: Request, path: str) -> Response:
        return render(
            request, "not_found.html", status=404, title="Page not found", path=WEBUI + path
        )

    return web
