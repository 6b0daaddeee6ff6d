"""Cluster Configuration > Layer 7 - Real Servers: every virtual service's real servers, with
"Add a new Real Server" next to each (the guide's 10.1.2), and Modify and Delete for each.

A real server's state (drain, halt, online) is not here: System Overview changes it at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from balancer import help
from balancer.edits import Edit
from balancer.front.gate import WEBUI, Author
from balancer.model import RealServer, VirtualService
from balancer.model.types import format_ports
from balancer.web import saved
from balancer.web.cluster_configuration import (
    Document,
    Form,
    Refused,
    confirm_delete,
    flatten,
    form_page,
    nest,
    read_form,
    save,
    shown,
    where,
)
from balancer.web.render import Renderer

TITLE = "Layer 7 \N{EN DASH} Real Servers"
PAGE = f"{WEBUI}real-servers"
FIELDS = tuple(help.REAL_SERVER)
OPTIONAL = {"port"}


def server_document(form: Form, prefix: str = "", names: tuple[str, ...] = FIELDS) -> Document:
    """A real server's fields (each named ``prefix + field``) as the document the API takes."""
    return nest(form, names, prefix=prefix, optional=OPTIONAL)


def fields_of(service: str, label: str) -> Callable[[str], str | None]:
    return where({f"virtual_services[{service}].real_servers[{label}].": ""}, FIELDS)


def router(render: Renderer) -> APIRouter:
    web = APIRouter(include_in_schema=False)
    store = render.store

    def listing(request: Request, *, status: int = 200, error: str = "") -> Response:
        return render(
            request,
            "servers.html",
            title=TITLE,
            status=status,
            services=[_service(vs) for vs in store.head().config.virtual_services],
            error=error,
            saved=saved.told(render, request),
        )

    def missing(request: Request, service: str, server: str = "") -> Response:
        what = (
            f"real server {server!r} in {service!r}" if server else f"virtual service {service!r}"
        )
        return listing(request, status=404, error=f"there is no {what}")

    def find(service: str, server: str) -> tuple[VirtualService | None, RealServer | None]:
        vs = store.head().config.virtual_service(service)
        return vs, vs.real_server(server) if vs else None

    def page(
        request: Request,
        service: str,
        form: Form,
        revision: int | str | None,
        refusal: Refused | None = None,
        server: str = "",
    ) -> Response:
        """Add a real server to ``service``, or Modify ``server`` in it."""
        vs, rs = find(service, server)
        if vs is None or (server and rs is None):
            return missing(request, service, server)
        return form_page(
            render,
            request,
            "servers_form.html",
            title=TITLE,
            form=form,
            revision=revision,
            refusal=refusal,
            service=_service(vs),
            server=server,
            about=help.REAL_SERVER,
        )

    def confirm(
        request: Request,
        service: str,
        server: str,
        revision: int | str | None,
        refusal: Refused | None = None,
    ) -> Response:
        vs, rs = find(service, server)
        if vs is None or rs is None:
            return missing(request, service, server)
        return confirm_delete(
            render,
            request,
            title=TITLE,
            what=f"real server {rs.label} ({rs.ip}) of virtual service {vs.label}",
            action=f"{PAGE}/{vs.label}/{rs.label}/delete",
            back=PAGE,
            revision=revision,
            refusal=refusal,
        )

    @web.get(PAGE)
    def servers_page(request: Request) -> Response:
        return listing(request)

    @web.get(PAGE + "/{service}/add")
    def add_page(request: Request, service: str) -> Response:
        # A required field has no default to show (pydantic's is a marker): it starts empty.
        blank = RealServer.model_fields
        form = {
            name: "" if blank[name].is_required() else shown(blank[name].default) for name in FIELDS
        }
        return page(request, service, form, store.head().id)

    @web.post(PAGE + "/{service}/add")
    async def add(request: Request, service: str, user: Author) -> Response:
        form = await read_form(request)
        document = server_document(form)
        try:
            save(
                render,
                request,
                form,
                Edit.add_real_server(service, document),
                fields_of(service, document["label"]),
                author=user,
            )
        except Refused as refusal:
            return page(request, service, form, form.get("revision"), refusal)
        return RedirectResponse(PAGE, status_code=303)

    @web.get(PAGE + "/{service}/{server}/modify")
    def modify_page(request: Request, service: str, server: str) -> Response:
        _, rs = find(service, server)
        if rs is None:
            return missing(request, service, server)
        form = flatten(rs.model_dump(mode="json", include=set(FIELDS)))
        return page(request, service, form, store.head().id, server=server)

    @web.post(PAGE + "/{service}/{server}/modify")
    async def modify(request: Request, service: str, server: str, user: Author) -> Response:
        form = await read_form(request)
        changes = server_document(form)
        try:
            save(
                render,
                request,
                form,
                Edit.modify_real_server(service, server, changes),
                fields_of(service, changes["label"]),
                author=user,
            )
        except Refused as refusal:
            return page(request, service, form, form.get("revision"), refusal, server=server)
        return RedirectResponse(PAGE, status_code=303)

    @web.get(PAGE + "/{service}/{server}/delete")
    def delete_page(request: Request, service: str, server: str) -> Response:
        return confirm(request, service, server, store.head().id)

    @web.post(PAGE + "/{service}/{server}/delete")
    async def delete(request: Request, service: str, server: str, user: Author) -> Response:
        form = await read_form(request)
        edit = Edit.remove_real_server(service, server)
        try:
            save(render, request, form, edit, lambda _: None, author=user)
        except Refused as refusal:
            return confirm(request, service, server, form.get("revision"), refusal)
        return RedirectResponse(PAGE, status_code=303)

    return web


def _service(vs: VirtualService) -> dict[str, Any]:
    return {
        "label": vs.label,
        "address": f"{vs.ip}:{format_ports(vs.ports)}",
        "real_servers": [
            {
                "label": rs.label,
                "ip": str(rs.ip),
                "port": rs.port if rs.port is not None else "",
                "weight": rs.weight,
                "max_connections": rs.max_connections or "no limit",
                "state": rs.state.value,
            }
            for rs in vs.real_servers
        ],
    }
