"""Cluster Configuration > Layer 7 - Virtual Services: list, add, modify, delete.

As in the guide (10.1.1): "Add a new Virtual Service" asks for the label, address, ports and
protocol; Modify has every other setting, in the guide's sections (persistence, health checks,
fallback server, timeouts). Each change is saved as a new revision and runs once committed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from balancer import help
from balancer.edits import Edit
from balancer.front.gate import WEBUI, Author
from balancer.model import VirtualService
from balancer.model.types import format_ports
from balancer.web import saved
from balancer.web.cluster_configuration import (
    Document,
    Form,
    Refused,
    check_choice,
    confirm_delete,
    flatten,
    form_page,
    health_check,
    nest,
    read_form,
    save,
    where,
)
from balancer.web.render import Renderer

TITLE = "Layer 7 \N{EN DASH} Virtual Services"
PAGE = f"{WEBUI}virtual-services"

# The fields of "Add a new Virtual Service", as the guide shows them.
ADD = ("label", "ip", "ports", "protocol")
# The fields of Modify; optional ones are none when left empty.
MODIFY = (*ADD, *(name for name in help.VIRTUAL_SERVICE if name not in ADD))
OPTIONAL = {
    "health_check.port",
    "health_check.path",
    "health_check.expect",
    "health_check.script",
    "fallback.ip",
    "fallback.port",
}
CHECKBOXES = {"health_check.also_check_service_port"}
# The choices of each select, in the guide's words.
CHOICES = {
    "protocol": help.PROTOCOLS,
    "balancing": help.BALANCING,
    "persistence.mode": help.PERSISTENCE,
    "health_check.type": help.HEALTH_CHECKS,
}


def service_document(form: Form, names: tuple[str, ...]) -> Document:
    """A virtual service's fields as the document the API takes."""
    document = nest(form, names, optional=OPTIONAL, checkboxes=CHECKBOXES)
    if "health_check" in document:
        document["health_check"] = health_check(document["health_check"])
    fallback = document.get("fallback")
    if fallback is not None and fallback["ip"] is None and fallback["port"] is None:
        document["fallback"] = None
    return document


def service_form(vs: VirtualService) -> Form:
    """A saved virtual service as its Modify form shows it."""
    document = vs.model_dump(mode="json", exclude={"real_servers"})
    document["fallback"] = document["fallback"] or {"ip": None, "port": None}
    form = flatten(document)
    form["health_check.type"] = check_choice(document["health_check"])
    del form["health_check.method"]
    return form


def fields_of(label: str, names: tuple[str, ...]) -> Callable[[str], str | None]:
    """Problems with ``virtual_services[<label>].<field>`` belong next to the field."""
    return where({f"virtual_services[{label}].": ""}, names)


def router(render: Renderer) -> APIRouter:
    web = APIRouter(include_in_schema=False)
    store = render.store

    def listing(request: Request, *, status: int = 200, error: str = "") -> Response:
        return render(
            request,
            "services.html",
            title=TITLE,
            status=status,
            services=[_row(vs) for vs in store.head().config.virtual_services],
            error=error,
            saved=saved.told(render, request),
        )

    def page(
        request: Request,
        form: Form,
        revision: int | str | None,
        refusal: Refused | None = None,
        label: str = "",
    ) -> Response:
        """Add a virtual service, or Modify ``label``."""
        return form_page(
            render,
            request,
            "services_form.html",
            title=TITLE,
            form=form,
            revision=revision,
            refusal=refusal,
            label=label,
            about=help.VIRTUAL_SERVICE,
            choices=CHOICES,
        )

    def find(label: str) -> VirtualService | None:
        return store.head().config.virtual_service(label)

    @web.get(PAGE)
    def services_page(request: Request) -> Response:
        return listing(request)

    @web.get(f"{PAGE}/add")
    def add_page(request: Request) -> Response:
        form = {"label": "", "ip": "", "ports": "", "protocol": "tcp"}
        return page(request, form, store.head().id)

    @web.post(f"{PAGE}/add")
    async def add(request: Request, user: Author) -> Response:
        form = await read_form(request)
        document = service_document(form, ADD)
        try:
            save(
                render,
                request,
                form,
                Edit.add_virtual_service(document),
                fields_of(document["label"], ADD),
                author=user,
            )
        except Refused as refusal:
            return page(request, form, form.get("revision"), refusal)
        return RedirectResponse(PAGE, status_code=303)

    @web.get(PAGE + "/{label}/modify")
    def modify_page(request: Request, label: str) -> Response:
        vs = find(label)
        if vs is None:
            return listing(request, status=404, error=f"there is no virtual service {label!r}")
        return page(request, service_form(vs), store.head().id, label=label)

    @web.post(PAGE + "/{label}/modify")
    async def modify(request: Request, label: str, user: Author) -> Response:
        form = await read_form(request)
        changes = service_document(form, MODIFY)
        try:
            save(
                render,
                request,
                form,
                Edit.modify_virtual_service(label, changes),
                fields_of(changes["label"], MODIFY),
                author=user,
            )
        except Refused as refusal:
            return page(request, form, form.get("revision"), refusal, label=label)
        return RedirectResponse(PAGE, status_code=303)

    @web.get(PAGE + "/{label}/delete")
    def delete_page(request: Request, label: str) -> Response:
        vs = find(label)
        if vs is None:
            return listing(request, status=404, error=f"there is no virtual service {label!r}")
        return _confirm(render, request, vs, store.head().id)

    @web.post(PAGE + "/{label}/delete")
    async def delete(request: Request, label: str, user: Author) -> Response:
        form = await read_form(request)
        try:
            save(
                render,
                request,
                form,
                Edit.remove_virtual_service(label),
                lambda _: None,
                author=user,
            )
        except Refused as refusal:
            vs = find(label)
            if vs is None:
                return listing(request, status=refusal.status, error="; ".join(refusal.general))
            return _confirm(render, request, vs, form.get("revision"), refusal)
        return RedirectResponse(PAGE, status_code=303)

    return web


def _confirm(
    render: Renderer,
    request: Request,
    vs: VirtualService,
    revision: int | str | None,
    refusal: Refused | None = None,
) -> Response:
    servers = ", ".join(rs.label for rs in vs.real_servers)
    return confirm_delete(
        render,
        request,
        title=TITLE,
        what=f"virtual service {vs.label}"
        + (f" and its real servers {servers}" if servers else ""),
        action=f"{PAGE}/{vs.label}/delete",
        back=PAGE,
        revision=revision,
        refusal=refusal,
    )


def _row(vs: VirtualService) -> dict[str, Any]:
    check = vs.health_check
    detail = []
    if check.path:
        detail.append(check.path + (f" for {check.expect}" if check.expect else ""))
    if check.port:
        detail.append(f"port {check.port}")
    return {
        "label": vs.label,
        "ip": str(vs.ip),
        "ports": format_ports(vs.ports),
        "balancing": dict(help.BALANCING)[vs.balancing.value],
        "persistence": dict(help.PERSISTENCE)[vs.persistence.mode.value],
        "check": dict(help.HEALTH_CHECKS)[check_choice(check.model_dump(mode="json"))],
        "check_detail": ", ".join(detail),
        "servers": len(vs.real_servers),
    }
