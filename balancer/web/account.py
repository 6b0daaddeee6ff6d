"""A signed-in user's own password, whatever their role: a page reached from the header, beside
their Two-factor sign-in page. It asks for the current password and the new one twice; the
change (balancer.front.account) ends their other sessions and keeps this one. A directory
user's password is not kept here: the page says it is changed in the directory."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from starlette.responses import RedirectResponse, Response

from balancer import users
from balancer.front.account import change_password, is_local
from balancer.front.gate import caller
from balancer.validate import Invalid, Problem
from balancer.web.render import Renderer

ACCOUNT = "/lbadmin/account/password"
Field = Annotated[str, Form()]


def router(render: Renderer) -> APIRouter:
    web = APIRouter(include_in_schema=False)
    access = render.access

    def page(request: Request, *, status: int = 200, **context: Any) -> Response:
        return render(
            request,
            "account_password.html",
            status=status,
            title="Your password",
            local=is_local(access, caller(request)),
            min_length=users.STRONG_LENGTH,
            **context,
        )

    @web.get(ACCOUNT)
    def shown(request: Request, done: str = "") -> Response:
        return page(request, done=done == "changed")

    @web.post(ACCOUNT)
    async def change(
        request: Request, current: Field = "", password: Field = "", repeat: Field = ""
    ) -> Response:
        address = request.client.host if request.client else "local"
        try:
            if password != repeat:
                raise Invalid([Problem("repeat", "is not the same as the new password")])
            await change_password(access, caller(request), current, password, address)
        except Invalid as error:
            return page(request, status=422, problems=list(error.problems))
        return RedirectResponse(f"{ACCOUNT}?done=changed", status_code=303)

    return web
