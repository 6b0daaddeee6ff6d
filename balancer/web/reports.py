"""Reports: traffic counters per virtual service and real server."""

from __future__ import annotations

from fastapi import APIRouter

from balancer.web.render import Renderer


def router(render: Renderer) -> APIRouter:
    web = APIRouter(include_in_schema=False)
    return web
