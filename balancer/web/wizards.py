"""The Layer 7 setup wizard and the CyberArk PSM preset as a one-page wizard.

The setup wizard makes one virtual service and its real servers in one step, which the guide
does in two pages (add, then Modify) and a page per real server. The PSM wizard takes what
``balancer psm create`` and POST /api/v1/presets/psm take and makes the guide's two virtual
services with the same preset. Either saves one revision, which runs once committed.

A list of servers grows by "Add another": the form is sent back with one more row, unsaved,
so the page needs no script.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from pydantic import TypeAdapter, ValidationError
from starlette.responses import RedirectResponse, Response

from balancer import help
from balancer.edits import Edit
from balancer.front.gate import WEBUI, Author
from balancer.model.types import Port
from balancer.presets import psm
from balancer.validate import Invalid, Problem, reason
from balancer.web import services
from balancer.web.cluster_configuration import (
    Form,
    Refused,
    form_page,
    read_form,
    refused,
    save,
    where,
)
from balancer.web.render import Renderer
from balancer.web.servers import server_document

LAYER_7 = f"{WEBUI}wizards/layer-7"
PSM = f"{WEBUI}wizards/psm"
# The setup wizard's fields for the virtual service; the rest keep their defaults.
SERVICE = (
    "label",
    "ip",
    "ports",
    "protocol",
    "balancing",
    "persistence.mode",
    "health_check.type",
    "health_check.port",
    "health_check.path",
    "health_check.expect",
)
SERVER = ("label", "ip", "port")
ROWS = 2  # rows of servers a wizard starts with: the guide's PSM1 and PSM2
MAX_ROWS = 64
_PORT = TypeAdapter(Port)


def router(render: Renderer) -> APIRouter:
    web = APIRouter(include_in_schema=False)
    store = render.store

    def page(
        request: Request,
        template: str,
        form: Form,
        revision: int | str | None,
        refusal: Refused | None = None,
    ) -> Response:
        return form_page(
            render,
            request,
            template,
            title=services.TITLE,
            form=form,
            revision=revision,
            refusal=refusal,
            rows=_rows(form),
            about=help.VIRTUAL_SERVICE,
            about_server=help.REAL_SERVER,
            about_psm=help.PSM,
            choices=services.CHOICES,
        )

    @web.get(LAYER_7)
    def layer_7_page(request: Request) -> Response:
        form = {"protocol": "tcp", "persistence.mode": "source_ip", "rows": str(ROWS)}
        return page(request, "wizard.html", form, store.head().id)

    @web.post(LAYER_7)
    async def layer_7(request: Request, user: Author) -> Response:
        form = await read_form(request)
        if "more" in form:
            return page(request, "wizard.html", _more(form), form.get("revision"))
        document = services.service_document(form, SERVICE)
        label = document["label"]
        rows = [row for row in range(_rows(form)) if _filled(form, f"real_servers.{row}.")]
        servers = [server_document(form, f"real_servers.{row}.", SERVER) for row in rows]
        document["real_servers"] = servers
        prefixes = {
            f"virtual_services[{label}].real_servers[{name}].": f"real_servers.{row}."
            for sent, row in enumerate(rows)
            for name in (servers[sent]["label"], sent)
        }
        prefixes[f"virtual_services[{label}]."] = ""
        try:
            save(
                render,
                request,
                form,
                Edit.add_virtual_service(document),
                where(prefixes, _known(form, SERVICE, "real_servers", SERVER)),
                author=user,
            )
        except Refused as refusal:
            return page(request, "wizard.html", form, form.get("revision"), refusal)
        return RedirectResponse(services.PAGE, status_code=303)

    @web.get(PSM)
    def psm_page(request: Request) -> Response:
        form = {
            "rdp_port": str(psm.RDP_PORT),
            "web_port": str(psm.WEB_PORT),
            "rows": str(ROWS),
            **{f"servers.{row}.label": f"PSM{row + 1}" for row in range(ROWS)},
        }
        return page(request, "wizard_psm.html", form, store.head().id)

    @web.post(PSM)
    async def psm_preset(request: Request, user: Author) -> Response:
        form = await read_form(request)
        if "more" in form:
            return page(request, "wizard_psm.html", _more(form), form.get("revision"))
        rows = [row for row in range(_rows(form)) if _filled(form, f"servers.{row}.")]
        servers = [
            (form.get(f"servers.{row}.label", "").strip(), form.get(f"servers.{row}.ip", ""))
            for row in rows
        ]
        field_of = _psm_fields(form, rows, servers)
        try:
            edit = Edit.psm_preset(**_psm_arguments(form, servers))
            save(render, request, form, edit, field_of, author=user)
        except Invalid as error:  # a port the preset cannot take
            refusal = refused(error.problems, field_of)
            return page(request, "wizard_psm.html", form, form.get("revision"), refusal)
        except Refused as refusal:
            return page(request, "wizard_psm.html", form, form.get("revision"), refusal)
        return RedirectResponse(services.PAGE, status_code=303)

    return web


def _rows(form: Form) -> int:
    try:
        return max(1, min(MAX_ROWS, int(form.get("rows", ""))))
    except ValueError:
        return ROWS


def _more(form: Form) -> Form:
    return {**form, "rows": str(min(MAX_ROWS, _rows(form) + 1))}


def _filled(form: Form, prefix: str) -> bool:
    """A row of servers the user wrote in; a blank one is left out."""
    return any(value.strip() for name, value in form.items() if name.startswith(prefix))


def _known(form: Form, fields: tuple[str, ...], rows: str, row_fields: tuple[str, ...]) -> set[str]:
    return {*fields, *(f"{rows}.{row}.{name}" for row in range(_rows(form)) for name in row_fields)}


def _psm_arguments(form: Form, servers: list[tuple[str, str]]) -> dict[str, Any]:
    """The preset's arguments, as POST /api/v1/presets/psm takes them, from the form."""
    problems = []
    ports: dict[str, int | None] = {}
    for name in ("rdp_port", "web_port", "check_port"):
        value = form.get(name, "").strip()
        if not value and name == "check_port":
            ports[name] = None
            continue
        try:
            ports[name] = _PORT.validate_strings(value)
        except ValidationError as error:
            problems.append(Problem(name, reason(error.errors()[0])))
    if problems:
        raise Invalid(problems)
    return {
        "rdp_vip": form.get("rdp_vip", ""),
        "web_vip": form.get("web_vip", ""),
        "servers": servers,
        "recommended": "recommended" in form,
        **ports,
    }


def _psm_fields(
    form: Form, rows: list[int], servers: list[tuple[str, str]]
) -> Callable[[str], str | None]:
    """Problems in the preset's two services, by the wizard's field that caused them."""
    known = _known(form, tuple(help.PSM), "servers", ("label", "ip"))
    prefixes = {
        f"virtual_services[{service}].real_servers[{name}].": f"servers.{row}."
        for service in (psm.RDP_LABEL, psm.WEB_LABEL)
        for sent, row in enumerate(rows)
        for name in (servers[sent][0], sent)
    }
    on_rows = where(prefixes, known)
    named = {
        **{name: name for name in ("rdp_port", "web_port", "check_port")},
        f"virtual_services[{psm.RDP_LABEL}].ip": "rdp_vip",
        f"virtual_services[{psm.WEB_LABEL}].ip": "web_vip",
        f"virtual_services[{psm.RDP_LABEL}].ports": "rdp_port",
        f"virtual_services[{psm.WEB_LABEL}].ports": "web_port",
        f"virtual_services[{psm.RDP_LABEL}].health_check.port": "check_port",
        f"virtual_services[{psm.WEB_LABEL}].health_check.port": "check_port",
    }

    def field_of(path: str) -> str | None:
        return named.get(path) or on_rows(path)

    return field_of
