"""System Overview (the guide's 11.1): every virtual service with its real servers, coloured
by state and refreshed in place; drain, halt and online at once; the Commit button; and the
appliance's network bandwidth, load average and memory.

An action from htmx gets the refreshed table (and the commit box, out of band); one from a
plain form goes back to the page, so that reloading it does not repeat the action. A refusal is
said in the page, in the words the API would use.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from starlette.responses import RedirectResponse, Response

from balancer.api.gate import WEBUI, Author
from balancer.controller import CommitFailed, Controller
from balancer.engines import EngineError
from balancer.model import RealServerState
from balancer.overview import service_shown, shown
from balancer.state import Overview, RealServerStatus
from balancer.system import System, SystemFigures
from balancer.web.render import Renderer, is_htmx
from balancer.web.units import bitrate, size

Field = Annotated[str, Form()]
# What an operator's action can run into: a bad or vanished server, a refusing engine.
ACTION_ERRORS = (ValueError, LookupError, CommitFailed, EngineError)
TITLE = "System Overview"


def router(render: Renderer, controller: Controller, system: System) -> APIRouter:
    web = APIRouter(include_in_schema=False)

    async def respond(template: str, request: Request, status: int, **context: Any) -> Response:
        view = await controller.overview()
        figures = _system(system.figures())
        return render(request, template, status=status, **_table(view), **figures, **context)

    async def page(request: Request, *, status: int = 200, **context: Any) -> Response:
        return await respond("overview.html", request, status, title=TITLE, **context)

    async def live(request: Request, *, status: int = 200, **context: Any) -> Response:
        return await respond("overview_live.html", request, status, **context)

    @web.get("/")
    def root() -> Response:
        return RedirectResponse(WEBUI, status_code=303)

    @web.get(WEBUI)
    async def overview_page(request: Request) -> Response:
        return await page(request)

    @web.get(f"{WEBUI}overview/live")
    async def overview_live(request: Request) -> Response:
        return await live(request)

    @web.get(f"{WEBUI}heartbeat")
    def heartbeat() -> Response:
        """Every page asks this every few seconds (base.html), so that every page can say when
        the appliance cannot be reached, and goes to sign-in when its session has ended."""
        return Response(status_code=204)

    @web.post(f"{WEBUI}overview/state")
    async def set_state(
        request: Request, user: Author, service: Field, server: Field, state: Field
    ) -> Response:
        try:
            await controller.set_state(service, server, RealServerState(state), user)
        except ACTION_ERRORS as error:
            if is_htmx(request):
                return await live(request, status=422, oob=True, action_error=str(error))
            return await page(request, status=422, action_error=str(error))
        if is_htmx(request):
            return await live(request, oob=True)
        return RedirectResponse(WEBUI, status_code=303)

    @web.post(f"{WEBUI}commit")
    async def commit(request: Request, user: Author) -> Response:
        try:
            applied = await controller.commit(user)
        except (CommitFailed, EngineError) as error:
            if is_htmx(request):
                return render(request, "commit_box.html", status=422, commit_error=str(error))
            return await page(request, status=422, commit_error=str(error))
        if is_htmx(request):
            return render(request, "commit_box.html", committed=applied.revision)
        return RedirectResponse(WEBUI, status_code=303)

    return web


def _table(view: Overview) -> dict[str, Any]:
    services = []
    for vs in view.engine.virtual_services if view.engine else ():
        servers = [_server(rs) for rs in vs.real_servers]
        services.append(
            {
                "label": vs.label,
                "ip": vs.ip,
                "ports": vs.ports,
                "conns": vs.counters.active,
                "shown": service_shown([rs["shown"] for rs in servers]),
                "real_servers": servers,
            }
        )
    return {"overview": view, "services": services}


def _server(rs: RealServerStatus) -> dict[str, Any]:
    host = f"[{rs.ip}]" if ":" in rs.ip else rs.ip
    return {
        "label": rs.label,
        "address": f"{host}:{rs.port}" if rs.port else rs.ip,
        "conns": rs.counters.active,
        "weight": rs.weight,
        "state": rs.state,
        "shown": shown(rs.state, rs.health),
        "reason": rs.reason,
    }


def _system(figures: SystemFigures) -> dict[str, Any]:
    memory = figures.memory
    return {
        "interfaces": [
            {
                "name": nic.name,
                "rx_rate": bitrate(nic.rx_rate),
                "tx_rate": bitrate(nic.tx_rate),
                "rx_total": size(nic.rx_bytes),
                "tx_total": size(nic.tx_bytes),
            }
            # One that never carried a byte (an unused tunnel or bond) has nothing to show.
            for nic in figures.interfaces
            if nic.rx_bytes or nic.tx_bytes
        ],
        "load": figures.load,
        "memory": None
        if memory is None
        else {
            "used": memory.used,
            "total": memory.total,
            "percent": round(100 * memory.used / memory.total) if memory.total else 0,
            "shown": f"{size(memory.used)} of {size(memory.total)}",
            "available": size(memory.available),
            "swap": f"{size(memory.swap_total - memory.swap_free)} of {size(memory.swap_total)}"
            if memory.swap_total
            else None,
        },
        "system_problems": figures.problems,
    }
