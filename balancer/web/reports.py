"""Reports: traffic per virtual service and real server from the engine's counters (current
and total connections, bytes in and out), refreshed in place like System Overview."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from balancer.state import Counters, Overview
from balancer.web.render import Renderer
from balancer.web.units import moment, size

TITLE = "Reports"


def router(render: Renderer) -> APIRouter:
    web = APIRouter(include_in_schema=False)

    @web.get("/lbadmin/reports")
    async def reports(request: Request) -> Response:
        view = await render.controller.overview()
        return render(request, "reports.html", title=TITLE, **_traffic(view))

    @web.get("/lbadmin/reports/live")
    async def reports_live(request: Request) -> Response:
        view = await render.controller.overview()
        return render(request, "reports_live.html", **_traffic(view))

    return web


def _traffic(view: Overview) -> dict[str, Any]:
    engine = view.engine
    services = []
    for vs in engine.virtual_services if engine else ():
        # Each real server's share of the service's connections: how evenly it balances.
        served = sum(rs.counters.total for rs in vs.real_servers)
        services.append(
            {
                "label": vs.label,
                "counters": _counters(vs.counters),
                "fallback": vs.fallback_connections,
                "real_servers": [
                    {
                        "label": rs.label,
                        "counters": _counters(rs.counters),
                        "share": rs.counters.total,
                        "percent": round(100 * rs.counters.total / served) if served else 0,
                    }
                    for rs in vs.real_servers
                ],
                "served": served,
            }
        )
    return {
        "overview": view,
        "services": services,
        "since": moment(engine.started) if engine else None,
    }


def _counters(counters: Counters) -> dict[str, Any]:
    return {
        "active": counters.active,
        "total": counters.total,
        "bytes_in": size(counters.bytes_in),
        "bytes_out": size(counters.bytes_out),
        # Exact, where the pointer rests: the short form hides small changes.
        "bytes_in_exact": f"{counters.bytes_in:,} bytes",
        "bytes_out_exact": f"{counters.bytes_out:,} bytes",
    }
