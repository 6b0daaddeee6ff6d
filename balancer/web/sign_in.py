"""Signing in and out of the WebUI. The gate has already checked the form's CSRF token.

A user with a second factor (or whose role must have one) passes a second step on the same
page before any session opens: the password's answer sets a ticket cookie, and the page then
asks for the code, or enrols (balancer.web.two_factor)."""

from __future__ import annotations

import math
import secrets
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Request
from starlette.responses import RedirectResponse, Response

from balancer.front.access import (
    SESSION_COOKIE,
    SIGN_IN_COOKIE,
    Access,
    set_cookie,
)
from balancer.front.gate import CALLER, SIGN_IN, WEBUI, caller
from balancer.front.throttle import SignInRefused
from balancer.front.two_factor import SECOND_STEP_COOKIE, SecondStep
from balancer.web import two_factor
from balancer.web.render import Renderer

Field = Annotated[str, Form()]


def router(render: Renderer, access: Access) -> APIRouter:
    web = APIRouter(include_in_schema=False)

    def page(
        request: Request, *, status: int = 200, error: str = "", username: str = "", next: str = ""
    ) -> Response:
        cookie = request.cookies.get(SIGN_IN_COOKIE) or secrets.token_urlsafe(32)
        response = render(
            request,
            "sign_in.html",
            status=status,
            csrf=access.sessions.csrf_token(cookie),
            error=error,
            username=username,
            next=next,
        )
        set_cookie(response, request, SIGN_IN_COOKIE, cookie, path=SIGN_IN)
        return response

    @web.get(SIGN_IN)
    def sign_in_page(request: Request, next: str = "") -> Response:
        if request.scope.get(CALLER) is not None:
            return RedirectResponse(_safe(next), status_code=303)
        waiting = two_factor.held(access, request)
        if waiting is not None:
            return two_factor.second_step_page(render, request, access, waiting[1], next=next)
        return page(request, next=next)

    @web.post(SIGN_IN)
    async def sign_in(
        request: Request,
        username: Field = "",
        password: Field = "",
        next: Field = "",
        code: Field = "",
        secret: Field = "",
        cancel: Field = "",
    ) -> Response:
        if cancel:
            ticket = request.cookies.get(SECOND_STEP_COOKIE)
            if ticket:
                access.two_factor.drop(ticket)
            restart = RedirectResponse(SIGN_IN, status_code=303)
            restart.delete_cookie(SECOND_STEP_COOKIE, path=SIGN_IN)
            return restart
        if code:
            return await two_factor.second_step(
                render, request, access, code=code, secret=secret, next=_safe(next)
            )
        address = request.client.host if request.client else "local"
        try:
            token = await access.sign_in(username, password, address)
        except SecondStep as step:
            second = RedirectResponse(
                f"{SIGN_IN}?{urlencode({'next': next})}" if next else SIGN_IN, status_code=303
            )
            set_cookie(second, request, SECOND_STEP_COOKIE, step.ticket, path=SIGN_IN)
            return second
        except SignInRefused as refused:
            response = page(
                request,
                status=429 if refused.throttled else 401,
                error=str(refused),
                username=username,
                next=next,
            )
            if refused.retry_after > 0:
                response.headers["Retry-After"] = str(math.ceil(refused.retry_after))
            return response
        response = RedirectResponse(_safe(next), status_code=303)
        set_cookie(response, request, SESSION_COOKIE, token, path="/")
        response.delete_cookie(SIGN_IN_COOKIE, path=SIGN_IN)
        return response

    @web.post("/lbadmin/sign-out")
    def sign_out(request: Request) -> Response:
        access.sign_out(caller(request))
        response = RedirectResponse(SIGN_IN, status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    return web


def _safe(next: str) -> str:
    """Where to go after signing in: a WebUI page, never another site."""
    return next if next.startswith(WEBUI) else WEBUI
