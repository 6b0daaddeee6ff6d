"""System Overview (the guide's 11.1): every virtual service with its real servers, each state
in a word, a shape and a colour, refreshed in place; drain, halt and online at once; the Commit
button; in an HA pair, both nodes (role, state, running revision, sync, engine) and each
persistence table's replication on both (link, entries, lag); the appliance's network
bandwidth, load average and memory; and, while nothing is configured, the guide's offer of the
Setup Wizard (8.3).

An action from htmx gets the refreshed table (and the commit box, out of band); one from a
plain form goes back to the page, at the server's row, so that reloading it does not repeat the
action. Draining or halting the one real server of a service that is up asks first, on a page
of its own, so that it works by keyboard and without script. A refusal is said in the page, in
the words the API would use.
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Request
from starlette.responses import RedirectResponse, Response

from balancer import software
from balancer.controller import CommitFailed, Controller, ForwardFailed
from balancer.engines import EngineError
from balancer.front.gate import WEBUI, Author
from balancer.model import RealServerState
from balancer.overview import leaves_none_up, service_shown, shown
from balancer.pair import replication
from balancer.state import Overview, RealServerStatus
from balancer.store import ReadOnly
from balancer.system import System, SystemFigures
from balancer.web import pair
from balancer.web.render import Renderer, is_htmx
from balancer.web.reports import bandwidth_and_load
from balancer.web.units import bitrate, moment, size
from balancer.web.wizards import LAYER_7

Field = Annotated[str, Form()]
# What an operator's action can run into: a bad or vanished server, a refusing engine, and on
# an HA pair's Secondary a Primary that did not do it.
ACTION_ERRORS = (ValueError, LookupError, CommitFailed, EngineError, ForwardFailed)
TITLE = "System Overview"
CONFIRM = f"{WEBUI}overview/confirm"
# What a real server's row says it will do when drained or halted, and its button.
ACTIONS = {"drain": "Drain", "halt": "Halt", "online": "Online"}


def router(render: Renderer, controller: Controller, system: System) -> APIRouter:
    web = APIRouter(include_in_schema=False)
    store = render.store
    installer = software.of(store.path.parent)

    def offer_setup_wizard() -> bool:
        return not (
            store.head().config.virtual_services or store.node_settings().setup_wizard_dismissed
        )

    async def respond(template: str, request: Request, status: int, **context: Any) -> Response:
        view = await controller.overview()
        figures = _system(system.figures())
        # The guide's Min / Avg / Max / Total beside them, as Reports shows them. Over the hour:
        # this is asked at every refresh, and a day of 10 s points takes 30 times as long.
        history = await asyncio.to_thread(
            bandwidth_and_load, store.path.parent, "hour", int(time.time())
        )
        pair_view, paired = render.cluster.view(), render.cluster.pair
        nodes = pair.nodes(pair_view, paired)
        peer = "" if paired is None else str(paired.peer_address)
        return render(
            request,
            template,
            status=status,
            **_table(view),
            **figures,
            **history,
            pair_nodes=nodes,
            replication=replication.shown(pair_view, peer, now=time.time()),
            software_update=installer.online(store.node_settings().update_url),
            **context,
        )

    async def page(request: Request, *, status: int = 200, **context: Any) -> Response:
        return await respond(
            "overview.html",
            request,
            status,
            title=TITLE,
            offer_setup_wizard=offer_setup_wizard(),
            setup_wizard=LAYER_7,
            **context,
        )

    async def live(request: Request, *, status: int = 200, **context: Any) -> Response:
        # The refresh brings the status bar too, so that it agrees with the nodes' table.
        return await respond("overview_live.html", request, status, refresh=True, **context)

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
    def heartbeat(request: Request) -> Response:
        """Every page asks this every few seconds (base.html), so that every page can say when
        the appliance cannot be reached, and goes to sign-in when its session has ended. In an
        HA pair it brings the status bar again (out of band)."""
        if render.cluster.pair is None:
            return Response(status_code=204)
        return render(request, "pair_status.html", oob=True)

    @web.post(f"{WEBUI}overview/state")
    async def set_state(
        request: Request,
        user: Author,
        service: Field,
        server: Field,
        state: Field,
        confirm: Annotated[bool, Form()] = False,
    ) -> Response:
        servers = _servers(await controller.overview(), service)
        try:
            wanted = RealServerState(state)
            taken_out = wanted is not RealServerState.ONLINE
            if taken_out and not confirm and leaves_none_up(_words(servers), server):
                return _ask(request, service, server, wanted)
            # The button of the state it is already in does nothing, and is not audited.
            if servers.get(server, {}).get("state") != wanted.value:
                await controller.set_state(service, server, wanted, user)
        except ACTION_ERRORS as error:
            if is_htmx(request):
                return await live(request, status=422, oob=True, action_error=str(error))
            return await page(request, status=422, action_error=str(error))
        if is_htmx(request):
            return await live(request, oob=True)
        return RedirectResponse(f"{WEBUI}#{_row_id(service, server)}", status_code=303)

    @web.get(CONFIRM)
    async def confirm_page(
        request: Request, service: str, server: str, state: RealServerState
    ) -> Response:
        """Asked before the one real server of a service that is up is drained or halted."""
        servers = _servers(await controller.overview(), service)
        return render(
            request,
            "overview_confirm.html",
            title=TITLE,
            service=service,
            server=server,
            state=state.value,
            action=ACTIONS[state.value],
            none_left=leaves_none_up(_words(servers), server),
            back=f"{WEBUI}#{_row_id(service, server)}",
        )

    @web.post(f"{WEBUI}overview/setup-wizard/dismiss")
    def dismiss_setup_wizard(user: Author) -> Response:
        node = store.node_settings()
        if not node.setup_wizard_dismissed:
            dismissed = node.model_copy(update={"setup_wizard_dismissed": True})
            store.save_node_settings(dismissed, author=user)
        return RedirectResponse(WEBUI, status_code=303)

    @web.post(f"{WEBUI}commit")
    async def commit(request: Request, user: Author) -> Response:
        try:
            applied = await controller.commit(user)
        except (CommitFailed, EngineError, ReadOnly) as error:
            if is_htmx(request):
                return render(request, "commit_box.html", status=422, commit_error=str(error))
            return await page(request, status=422, commit_error=str(error))
        if is_htmx(request):
            # On an HA pair's Primary, whether the Secondary applied it too (and when), or why not.
            syncer = render.cluster.syncer
            secondary = None if syncer is None else await syncer.answer(applied.revision)
            when = None if secondary is None or secondary.at is None else moment(secondary.at)
            return render(
                request,
                "commit_box.html",
                committed=applied.revision,
                secondary=secondary,
                secondary_at=when,
            )
        return RedirectResponse(WEBUI, status_code=303)

    return web


def _ask(request: Request, service: str, server: str, state: RealServerState) -> Response:
    """Off to the page that asks first: a whole page, so htmx is told to go there."""
    asked = f"{CONFIRM}?{urlencode({'service': service, 'server': server, 'state': state.value})}"
    if is_htmx(request):
        return Response(headers={"HX-Redirect": asked})
    return RedirectResponse(asked, status_code=303)


def _table(view: Overview) -> dict[str, Any]:
    services = []
    for vs in view.engine.virtual_services if view.engine else ():
        servers = [_server(vs.label, rs) for rs in vs.real_servers]
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
    return {"overview": view, "services": services, "actions": ACTIONS}


def _servers(view: Overview, service: str) -> dict[str, dict[str, Any]]:
    """The real servers of ``service`` as the page shows them, by label."""
    for vs in _table(view)["services"]:
        if vs["label"] == service:
            return {rs["label"]: rs for rs in vs["real_servers"]}
    return {}


def _words(servers: dict[str, dict[str, Any]]) -> dict[str, str]:
    return {label: rs["shown"] for label, rs in servers.items()}


def _row_id(service: str, server: str) -> str:
    # Labels are letters, digits, dots, dashes and underscores: never a slash.
    return f"server:{service}/{server}"


def _server(service: str, rs: RealServerStatus) -> dict[str, Any]:
    return {
        "id": _row_id(service, rs.label),
        "label": rs.label,
        "ip": rs.ip,
        "port": rs.port,
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
