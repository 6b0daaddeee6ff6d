"""Maintenance > Passwords: users, their passwords, and API keys.

Every change goes through ``balancer.users`` and the store, as the API's do, and is audited
with the signed-in user's name. The WebUI adds what a shared screen needs: your own password
is changed only with the current one; removing yourself is confirmed first; the last user
cannot be removed; a new API key is shown once, on the page that made it.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from balancer import totp, users
from balancer.configuration import Missing
from balancer.front.account import change_password
from balancer.front.gate import SIGN_IN, Author, caller
from balancer.roles import Role
from balancer.validate import Invalid, Problem
from balancer.web.render import Renderer
from balancer.web.units import moment

PAGE = "/lbadmin/maintenance/passwords"
Field = Annotated[str, Form()]
DONE = {
    "added": "User {} added.",
    "password": "The password of {} was changed; their other sessions have ended.",
    "removed": "User {} removed, and their API keys revoked.",
    "revoked": "API key {} revoked.",
    "role": "The role of {} was changed; it holds from their next click.",
    "two_factor_required": "Two-factor sign-in is now required of {}.",
    "two_factor_reset": "The second factor of {} was reset: they sign in with the password alone, "
    "or enrol again if their role must have one.",
}


def router(render: Renderer) -> APIRouter:
    web = APIRouter(include_in_schema=False)
    store = render.store

    def page(request: Request, *, status: int = 200, **context: Any) -> Response:
        listed = store.users()
        return render(
            request,
            "passwords.html",
            status=status,
            title="Passwords",
            users=[
                {
                    "name": u.name,
                    "created": moment(u.created),
                    "changed": moment(u.changed),
                    "role": u.role,
                    "two_factor": store.two_factor(u.name) is not None,
                }
                for u in listed
            ],
            last=len(listed) == 1,
            roles=list(Role),
            keys=[
                {
                    "id": k.id,
                    "name": k.name,
                    "owner": k.owner,
                    "role": k.role,
                    "created": moment(k.created),
                    "revoked": moment(k.revoked) if k.revoked is not None else None,
                }
                for k in reversed(store.api_keys())
            ],
            min_length=users.STRONG_LENGTH,
            # Making a key asks for a code of a user with a second factor (balancer.totp).
            code_needed=store.two_factor(caller(request).user) is not None,
            two_factor_required=store.two_factor_required(),
            **context,
        )

    def refused(request: Request, error: Invalid | Missing, form: str) -> Response:
        if isinstance(error, Missing):
            error = Invalid([Problem(error.field, str(error))])
        problems = list(error.problems)
        return page(request, status=422, problems=problems, form=form)

    @web.get(PAGE)
    def shown(request: Request, done: str = "", who: str = "") -> Response:
        message = DONE[done].format(who) if done in DONE else None
        return page(request, done=message)

    def done(what: str, who: object) -> Response:
        return RedirectResponse(f"{PAGE}?{urlencode({'done': what, 'who': who})}", status_code=303)

    @web.post(f"{PAGE}/users")
    async def add_user(
        request: Request,
        user: Author,
        name: Field = "",
        password: Field = "",
        repeat: Field = "",
        role: Field = Role.ADMINISTRATOR,
    ) -> Response:
        try:
            _same(password, repeat)
            chosen = _role(role)
            await run_in_threadpool(users.add_user, store, name, password, chosen, author=user)
        except Invalid as error:
            return refused(request, error, "add")
        return done("added", name)

    @web.post(f"{PAGE}/password")
    async def set_password(
        request: Request,
        user: Author,
        name: Field = "",
        password: Field = "",
        repeat: Field = "",
        current: Field = "",
    ) -> Response:
        try:
            _same(password, repeat)
            if name == user:
                # Your own, as on your own page: with the current one, and this session kept.
                address = request.client.host if request.client else "local"
                await change_password(render.access, caller(request), current, password, address)
            else:
                await run_in_threadpool(users.set_password, store, name, password, author=user)
        except (Invalid, Missing) as error:
            return refused(request, error, f"password-{name}")
        return done("password", name)

    @web.post(f"{PAGE}/role")
    def set_role(request: Request, user: Author, name: Field = "", role: Field = "") -> Response:
        try:
            store.set_role(name, _role(role), author=user)
        except (Invalid, Missing) as error:
            return refused(request, error, "users")
        return done("role", name)

    @web.post(f"{PAGE}/remove")
    def remove_user(
        request: Request, user: Author, name: Field = "", confirm: Field = ""
    ) -> Response:
        if name == user and confirm != "yes":
            return page(request, confirm_remove=name)
        try:
            store.remove_user(name, author=user)
        except (Invalid, Missing) as error:
            return refused(request, error, "users")
        if name == user:
            return RedirectResponse(SIGN_IN, status_code=303)
        return done("removed", name)

    @web.post(f"{PAGE}/api-keys")
    def add_key(
        request: Request,
        user: Author,
        name: Field = "",
        owner: Field = "",
        code: Field = "",
        role: Field = "",
    ) -> Response:
        try:
            totp.require_code(store, user, code)
            narrower = _role(role) if role else None
            made, key = users.add_api_key(store, name, owner or user, narrower, author=user)
        except Invalid as error:
            return refused(request, error, "key")
        return page(request, new_key={"id": made.id, "name": made.name, "key": key})

    @web.post(f"{PAGE}/api-keys/revoke")
    def revoke_key(request: Request, user: Author, id: Field = "") -> Response:
        try:
            if not id.isdigit() or not 1 <= int(id) < 2**63:
                raise Invalid([Problem("id", f"{id!r} is not an API key's number")])
            store.revoke_api_key(int(id), author=user)
        except (Invalid, Missing) as error:
            return refused(request, error, "keys")
        return done("revoked", id)

    return web


def _role(text: str) -> Role:
    try:
        return Role(text)
    except ValueError:
        known = ", ".join(Role)
        raise Invalid([Problem("role", f"{text!r} is not a role: {known}")]) from None


def _same(password: str, repeat: str) -> None:
    if password != repeat:
        raise Invalid([Problem("repeat", "is not the same as the new password")])
