"""What the Cluster Configuration pages and wizards share: a form's fields turned into the
document the API takes, an edit saved on the revision the form was based on, and a refusal
turned into reasons next to the fields they name.

Every edit is a ``balancer.edits.Edit`` saved by ``Controller.save``, as the API's are, so a
form can save nothing the API would refuse, refuses it in the same words, and is audited and
confirmed ("Saved: ...") in the edit's own words.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from starlette.responses import Response

from balancer.configuration import Missing
from balancer.edits import Edit
from balancer.store import Conflict, Revision
from balancer.validate import Invalid, Problem
from balancer.web import saved
from balancer.web.render import Renderer

Form = dict[str, str]  # what the browser sent, by field name; shown again exactly as typed
Document = dict[str, Any]

# A field whose problems the form shows next to another: the method is chosen in the guide's
# "Health Checks" select, with the type.
ALIASES = {"health_check.method": "health_check.type"}


@dataclass
class Refused(Exception):
    """A form that was not saved: reasons by field name, and those no field on the form shows."""

    errors: dict[str, str] = field(default_factory=dict)
    general: list[str] = field(default_factory=list)
    status: int = 422


async def read_form(request: Request) -> Form:
    sent = await request.form()
    return {name: value for name, value in sent.items() if isinstance(value, str)}


def shown(value: Any) -> str:
    """A saved value as a form field shows it: 1800 rather than 1800.0, nothing for none."""
    if value is None or value is False:
        return ""
    if value is True:
        return "on"
    if isinstance(value, float):
        return str(value).removesuffix(".0")
    return str(value)


def flatten(document: Mapping[str, Any], prefix: str = "") -> Form:
    """{"health_check": {"port": 443}} -> {"health_check.port": "443"}."""
    flat: Form = {}
    for key, value in document.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = shown(value)
    return flat


def nest(
    form: Form,
    names: Iterable[str],
    *,
    prefix: str = "",
    optional: Collection[str] = (),
    checkboxes: Collection[str] = (),
) -> Document:
    """The fields ``names`` (each read as ``prefix + name``) as a document for the model:
    {"health_check.port": "443"} -> {"health_check": {"port": "443"}}. An empty ``optional``
    field is none; a checkbox is on when sent. The model converts and checks the rest."""
    document: Document = {}
    for name in names:
        raw = form.get(prefix + name)
        value: Any
        if name in checkboxes:
            value = raw is not None
        else:
            value = (raw or "").strip()
            if not value and name in optional:
                value = None
        *sections, key = name.split(".")
        place = document
        for section in sections:
            place = place.setdefault(section, {})
        place[key] = value
    return document


def health_check(section: Document) -> Document:
    """The guide's "Health Checks" choice ("https:GET") as the model's type and method, and
    the fields only other kinds of check use, hidden on the page, set aside."""
    kind, _, method = str(section.get("type") or "").partition(":")
    section = {**section, "type": kind}
    if method:
        section["method"] = method
    else:
        section["path"] = section["expect"] = None
    if kind != "external":
        section["script"] = None
    return section


def check_choice(check: Mapping[str, Any]) -> str:
    """The model's health check as the guide's "Health Checks" choice."""
    kind = str(check["type"])
    return f"{kind}:{check['method']}" if kind in ("http", "https") else kind


def where(prefixes: Mapping[str, str], known: Collection[str]) -> Callable[[str], str | None]:
    """Which form field a problem's path names: ``prefixes`` maps the start of a path to the
    start of the field's name (``virtual_services[Web].`` -> ``""``), tried in order; a path
    that names no field on the form (``known``) is said above the form."""

    def field_of(path: str) -> str | None:
        for start, replacement in prefixes.items():
            if path.startswith(start):
                name = replacement + path[len(start) :]
                name = ALIASES.get(name, name)
                return name if name in known else None
        return None

    return field_of


def refused(problems: Iterable[Problem], field_of: Callable[[str], str | None]) -> Refused:
    refusal = Refused()
    for problem in problems:
        name = field_of(problem.field)
        if name is None:
            refusal.general.append(str(problem))
        else:
            # One reason per field is enough to fix it; the first is the one the model met.
            refusal.errors.setdefault(name, problem.reason)
    return refusal


def base_of(form: Form) -> int:
    """The revision the form was based on (its hidden field)."""
    try:
        return int(form.get("revision", ""))
    except ValueError:
        raise Refused(
            general=["the form does not say which revision it was based on: open the page again"]
        ) from None


def save(
    render: Renderer,
    request: Request,
    form: Form,
    edit: Edit,
    field_of: Callable[[str], str | None],
    *,
    author: str,
) -> Revision:
    """Save ``edit`` of the newest configuration as the API does, if the form was based on the
    newest revision, and say so on the next page ("Saved: ..."); raise Refused with the
    reasons otherwise. Nothing is saved then."""
    base = base_of(form)
    try:
        head = render.store.head().id
        if head != base:  # said before any other problem: the page is out of date
            raise Conflict(f"revision {head} was saved since revision {base}")
        revision = render.controller.save(edit, base=base, author=author)
    except Invalid as error:
        raise refused(error.problems, field_of) from None
    except Conflict as error:
        raise Refused(
            general=[
                "The configuration was changed by someone else since you opened this page "
                f"({error}). Nothing was saved: open the page again to see the change, then "
                "make yours."
            ],
            status=409,
        ) from None
    except Missing as error:
        raise Refused(general=[str(error)], status=404) from None
    saved.tell(render, request, edit.done)
    return revision


def form_page(
    render: Renderer,
    request: Request,
    template: str,
    *,
    title: str,
    form: Form,
    revision: int | str | None,
    refusal: Refused | None = None,
    **context: Any,
) -> Response:
    """A form as ``form`` fills it, based on ``revision``; when it was refused, with the
    refusal's status and its reasons, by field and above the form."""
    refusal = refusal or Refused(status=200)
    return render(
        request,
        template,
        title=title,
        status=refusal.status,
        form=form,
        errors=refusal.errors,
        general=refusal.general,
        revision=revision,
        **context,
    )


def confirm_delete(
    render: Renderer,
    request: Request,
    *,
    title: str,
    what: str,
    action: str,
    back: str,
    revision: int | str | None,
    refusal: Refused | None = None,
) -> Response:
    """The page that asks before ``what`` is deleted: a plain form, so no script is needed."""
    return form_page(
        render,
        request,
        "services_delete.html",
        title=title,
        form={},
        revision=revision,
        refusal=refusal,
        what=what,
        action=action,
        back=back,
    )
