"""Local Configuration: service socket addresses and the WebUI's certificate."""

from __future__ import annotations

from fastapi import APIRouter

from balancer.web.render import Renderer


def router(render: Renderer) -> APIRouter:
    web = APIRouter(include_in_schema=False)
    return web
