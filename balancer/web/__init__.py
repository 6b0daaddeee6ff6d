"""The WebUI at /lbadmin/, laid out as the guide's menu: pages rendered on the server (Jinja2),
live parts refreshed with htmx, every file it needs in the package (no build step).

It reads and changes the appliance only through what the API uses (the controller and the
store); it never reaches into an engine.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from balancer.controller import Controller
from balancer.front.access import Access
from balancer.front.gate import STATIC, Refused
from balancer.pair.cluster import Cluster
from balancer.store import Store
from balancer.system import System
from balancer.web import (
    account,
    alerts,
    directory,
    error_pages,
    high_availability,
    local_configuration,
    logs,
    maintenance,
    overview,
    passwords,
    reports,
    servers,
    services,
    sign_in,
    software,
    support,
    two_factor,
    view_configuration,
    wizards,
)
from balancer.web.render import Renderer


def install(
    app: FastAPI,
    store: Store,
    controller: Controller,
    cluster: Cluster,
    access: Access,
    system: System,
) -> Refused:
    """The WebUI's routes; returns the page the gate shows a role that may not (a 403)."""
    render = Renderer(store, controller, cluster, access)
    app.include_router(sign_in.router(render, access))
    app.include_router(two_factor.router(render, access))
    app.include_router(overview.router(render, controller, system))
    for page in (
        account,
        local_configuration,
        alerts,
        directory,
        services,
        servers,
        high_availability,
        wizards,
        maintenance,
        software,
        passwords,
        view_configuration,
        reports,
        logs,
        support,
    ):
        app.include_router(page.router(render))
    app.mount(STATIC.rstrip("/"), StaticFiles(directory=Path(__file__).parent / "static"))
    error_pages.install(app, render)
    return error_pages.refused(render)
