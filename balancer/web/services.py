"""Cluster Configuration > Layer 7 - Virtual Services: list, add, modify, delete."""

from __future__ import annotations

from fastapi import APIRouter

from balancer.web.render import Renderer


def router(render: Renderer) -> APIRouter:
    web = APIRouter(include_in_schema=False)
    return web
