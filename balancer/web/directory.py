"""Local Configuration > Remote Authentication: directory sign-in (LDAP, LDAPS, StartTLS,
Active Directory, RADIUS) with its group -> role mapping, and a Test that says in one line what
works or exactly what failed. The secret is written here and never shown back; the same
settings as /api/v1/directory and `balancer directory`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from balancer import directory
from balancer.front.gate import Author
from balancer.validate import Invalid, Problem
from balancer.web.render import Renderer

PAGE = "/lbadmin/local-configuration/remote-authentication"
# The form's fields that are settings as typed; servers and roles are read apart.
TEXT_FIELDS = (
    "kind",
    "timeout",
    "base_dn",
    "bind_dn",
    "user_filter",
    "domain",
    "nested_groups",
    "member_attribute",
    "ca_certificate",
    "role_attribute",
)


def router(render: Renderer) -> APIRouter:
    web = APIRouter(include_in_schema=False)
    store = render.store

    def page(request: Request, *, status: int = 200, **context: Any) -> Response:
        saved = directory.shown(store)
        return render(
            request,
            "directory.html",
            status=status,
            title="Remote Authentication",
            saved=saved,
            form=context.pop("form", None) or _form_of(saved),
            **context,
        )

    @web.get(PAGE)
    def directory_page(request: Request, done: str = "") -> Response:
        return page(request, done=done)

    @web.post(PAGE)
    async def save(request: Request, user: Author) -> Response:
        form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
        try:
            body = _settings(form)
            await run_in_threadpool(
                directory.save, store, body, form.get("secret") or None, author=user
            )
        except Invalid as error:
            kept = {k: v for k, v in form.items() if k not in ("secret", "csrf_token")}
            return page(request, status=422, problems=error.problems, form=kept)
        return RedirectResponse(f"{PAGE}?done=saved", status_code=303)

    @web.post(f"{PAGE}/test")
    async def test(request: Request, user: Author) -> Response:
        form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
        name = form.get("test_name", "").strip()[:256]
        found = await run_in_threadpool(directory.configured, store)
        if found is None:
            return page(request, status=409, verdict=(False, "directory sign-in is not set up"))
        try:
            said = await run_in_threadpool(
                directory.test, *found, name, form.get("test_password", "")[:1024]
            )
            verdict, reason = (True, said), None
        except directory.Refused as error:
            verdict, reason = (False, f"{error.reason}: {error}"), error.reason
        detail = {"ok": verdict[0], "reason": reason}
        store.audit(author=user, action="directory_test", target=name, detail=detail)
        return page(request, verdict=verdict, test_name=name)

    @web.post(f"{PAGE}/off")
    def off(user: Author) -> Response:
        directory.save(store, None, None, author=user)
        return RedirectResponse(f"{PAGE}?done=off", status_code=303)

    return web


def _settings(form: dict[str, str]) -> dict[str, Any]:
    """The settings as the form has them: servers one a line or by spaces, a role mapping
    "GROUP = ROLE" a line."""
    settings: dict[str, Any] = {
        field: form[field].strip() for field in TEXT_FIELDS if form.get(field, "").strip()
    }
    if "ca_certificate" in form:
        settings["ca_certificate"] = form["ca_certificate"].strip()
    settings["servers"] = form.get("servers", "").split()
    roles = []
    for n, line in enumerate(form.get("roles", "").splitlines(), 1):
        if not line.strip():
            continue
        group, equals, role = line.rpartition("=")
        if not equals or not group.strip():
            raise Invalid(
                [Problem("roles", f"line {n}: write GROUP = ROLE, e.g. admins = administrator")]
            )
        roles.append({"group": group.strip(), "role": role.strip()})
    settings["roles"] = roles
    default = form.get("default_role", "")
    settings["default_role"] = default or None
    return settings


def _form_of(saved: dict[str, Any]) -> dict[str, str]:
    """The saved settings as the form shows them."""
    if not saved["enabled"]:
        return {}
    form = {field: str(saved[field] if saved[field] is not None else "") for field in TEXT_FIELDS}
    form["servers"] = "\n".join(saved["servers"])
    form["roles"] = "\n".join(f"{m['group']} = {m['role']}" for m in saved["roles"])
    form["default_role"] = saved["default_role"] or ""
    return form
