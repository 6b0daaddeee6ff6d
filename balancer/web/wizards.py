"""The Layer 7 setup wizard and the CyberArk PSM preset as a one-page wizard."""

from __future__ import annotations

from fastapi import APIRouter

from balancer.web.render import Renderer


def router(render: Renderer) -> APIRouter:
    web = APIRouter(include_in_schema=False)
    return web
