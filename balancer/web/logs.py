"""Logs: the engine's and the appliance's logs and the audit trail, newest first."""

from __future__ import annotations

from fastapi import APIRouter

from balancer.web.render import Renderer


def router(render: Renderer) -> APIRouter:
    web = APIRouter(include_in_schema=False)
    return web
