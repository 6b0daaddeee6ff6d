"""Two-factor sign-in in the WebUI: the second step of signing in (a code, or enrolment when
the user's role must have a second factor and they have none), and each user's own page to
enrol, enrol a new app or turn it off (with a current code), and the administrator's reset on
Maintenance > Passwords.

A secret being enrolled travels in the form, as the page shows it anyway; it is kept only once
a code it makes was typed. Recovery codes are shown once, on the page that made them.
"""

from __future__ import annotations

import math
import secrets
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from balancer import totp
from balancer.front.access import (
    SESSION_COOKIE,
    SIGN_IN_COOKIE,
    Access,
    set_cookie,
)
from balancer.front.gate import SIGN_IN, Author, caller
from balancer.front.throttle import SignInRefused
from balancer.front.two_factor import SECOND_STEP_COOKIE, Ticket
from balancer.roles import Role
from balancer.store import ReadOnly
from balancer.validate import Invalid, Problem
from balancer.web.render import Renderer

ACCOUNT = "/lbadmin/account/two-factor"
RESET = "/lbadmin/maintenance/passwords/two-factor-reset"
REQUIRED = "/lbadmin/maintenance/passwords/two-factor-required"
PASSWORDS = "/lbadmin/maintenance/passwords"
Field = Annotated[str, Form()]


def enrolment(hostname: str, user: str, secret: str) -> dict[str, str]:
    """What an enrolment form shows: the QR code (inline SVG) and the secret as text."""
    return {
        "secret": secret,
        "grouped": totp.grouped(secret),
        "qr": totp.qr_svg(totp.uri(secret, user, hostname)),
    }


def held(access: Access, request: Request) -> tuple[str, Ticket] | None:
    """The sign-in waiting for its second step in this browser, if any."""
    ticket = request.cookies.get(SECOND_STEP_COOKIE)
    found = access.two_factor.find(ticket) if ticket else None
    return (ticket, found) if ticket and found else None


def second_step_page(
    render: Renderer,
    request: Request,
    access: Access,
    found: Ticket,
    *,
    next: str,
    status: int = 200,
    error: str = "",
    secret: str = "",
) -> Response:
    cookie = request.cookies.get(SIGN_IN_COOKIE) or secrets.token_urlsafe(32)
    context: dict[str, Any] = {"user_name": found.user, "next": next, "error": error}
    if found.enrol:
        hostname = render.store.node_settings().hostname
        context["enrol"] = enrolment(hostname, found.user, secret or totp.new_secret())
    response = render(
        request,
        "sign_in_two_factor.html",
        status=status,
        csrf=access.sessions.csrf_token(cookie),
        **context,
    )
    set_cookie(response, request, SIGN_IN_COOKIE, cookie, path=SIGN_IN)
    return response


async def second_step(
    render: Renderer,
    request: Request,
    access: Access,
    *,
    code: str,
    secret: str,
    next: str,
) -> Response:
    """The answer to a second step's form: the session, or the form again saying why.
    ``next``: the WebUI page to go to then, already checked to be one."""
    address = request.client.host if request.client else "local"
    waiting = held(access, request)
    if waiting is None:
        expired = RedirectResponse(SIGN_IN, status_code=303)
        expired.delete_cookie(SECOND_STEP_COOKIE, path=SIGN_IN)
        return expired
    ticket, found = waiting
    codes: list[str] = []
    try:
        if found.enrol:
            token, codes = await access.two_factor.enrol(ticket, secret, code, address)
        else:
            token = await access.two_factor.verify(ticket, code, address)
    except (Invalid, ReadOnly, SignInRefused) as refused:
        status, wait = 422, 0.0
        if isinstance(refused, SignInRefused):
            status, wait = (429 if refused.throttled else 401), refused.retry_after
        error = f"The code {refused.problems[0].reason}." if isinstance(refused, Invalid) else ""
        again = second_step_page(
            render,
            request,
            access,
            found,
            next=next,
            status=status,
            error=error or str(refused),
            secret=secret,
        )
        if wait > 0:
            again.headers["Retry-After"] = str(math.ceil(wait))
        return again
    response: Response
    if codes:
        response = render(
            request, "sign_in_recovery.html", codes=codes, next=next, user_name=found.user
        )
    else:
        response = RedirectResponse(next, status_code=303)
    set_cookie(response, request, SESSION_COOKIE, token, path="/")
    response.delete_cookie(SIGN_IN_COOKIE, path=SIGN_IN)
    response.delete_cookie(SECOND_STEP_COOKIE, path=SIGN_IN)
    return response


def router(render: Renderer, access: Access) -> APIRouter:
    web = APIRouter(include_in_schema=False)
    store = render.store

    def page(request: Request, *, status: int = 200, **context: Any) -> Response:
        user = caller(request).user
        found = store.two_factor(user)
        local = store.role(user) is not None  # a directory's users are not the store's
        if local and found is None and "codes" not in context:
            secret = context.pop("secret", "") or totp.new_secret()
            context["enrol"] = enrolment(store.node_settings().hostname, user, secret)
        return render(
            request,
            "two_factor.html",
            status=status,
            title="Two-factor sign-in",
            local=local,
            enrolled=found is not None,
            recovery_left=len(found.recovery) if found else 0,
            required=store.role(user) in store.two_factor_required(),
            **context,
        )

    @web.get(ACCOUNT)
    def shown(request: Request, done: str = "") -> Response:
        return page(request, done=done == "off")

    @web.post(ACCOUNT)
    async def enrol(
        request: Request, user: Author, secret: Field = "", code: Field = ""
    ) -> Response:
        try:
            codes = await run_in_threadpool(
                totp.enrol, store, user, secret, code, store.now(), author=user
            )
        except (Invalid, ReadOnly) as error:
            problems = _problems(error)
            return page(request, status=422, problems=problems, secret=secret)
        return page(request, codes=codes)

    @web.post(f"{ACCOUNT}/off")
    async def turn_off(
        request: Request, user: Author, code: Field = "", then: Field = ""
    ) -> Response:
        try:
            used = await run_in_threadpool(totp.check, store, user, code, store.now())
            if used != "code":
                raise Invalid([Problem("code", "is not the code your app shows now")])
            store.set_two_factor(user, None, author=user, action="two_factor_off")
        except (Invalid, ReadOnly) as error:
            return page(request, status=422, problems=_problems(error))
        if then == "enrol":
            return RedirectResponse(ACCOUNT, status_code=303)
        return RedirectResponse(f"{ACCOUNT}?done=off", status_code=303)

    @web.post(RESET)
    def reset(request: Request, user: Author, name: Field = "") -> Response:
        # A user who is not there, or a Secondary's refusal: the error pages say it.
        store.set_two_factor(name, None, author=user, action="two_factor_reset")
        query = urlencode({"done": "two_factor_reset", "who": name})
        return RedirectResponse(f"{PASSWORDS}?{query}", status_code=303)

    @web.post(REQUIRED)
    def set_required(
        request: Request, user: Author, required: Annotated[list[str] | None, Form()] = None
    ) -> Response:
        # Ticked boxes only: a role that is none of the three is no box of the form's.
        roles = frozenset(Role(r) for r in required or [] if r in set(Role))
        store.set_two_factor_required(roles, author=user)
        said = ", ".join(sorted(roles)) or "no role"
        query = urlencode({"done": "two_factor_required", "who": said})
        return RedirectResponse(f"{PASSWORDS}?{query}", status_code=303)

    return web


def _problems(error: Invalid | ReadOnly) -> list[Problem]:
    return list(error.problems) if isinstance(error, Invalid) else [Problem("", str(error))]
