"""What a signed-in browser is shown when a WebUI address has no page, does not take what was
sent, or fails: a page with the menu and a plain sentence, never the API's JSON.

The API (/api/...), htmx's own requests and anyone not signed in keep the answers they had:
the gate sends a signed-out visitor to sign in before any of this, so nothing here tells
them which pages exist.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from starlette.exceptions import HTTPException
from starlette.responses import PlainTextResponse, Response

from balancer.configuration import Missing
from balancer.engines import EngineError
from balancer.front.errors import allowed_methods
from balancer.front.gate import CALLER, STATIC, Refused, caller
from balancer.roles import Role
from balancer.store import NotFound
from balancer.web.render import Renderer, is_htmx


def wants_page(request: Request, *, signed_in: bool = True) -> bool:
    """``signed_in`` False: the caller is not known, as outside the gate, where a failure is
    answered (it shows only the menu, which is the same on every appliance)."""
    path = request.url.path
    if signed_in and request.scope.get(CALLER) is None:
        return False
    if is_htmx(request) or path.startswith("/api/"):
        return False
    return (path.startswith("/lbadmin/") and not path.startswith(STATIC)) or (
        "text/html" in request.headers.get("accept", "")
    )


def sentence(request: Request, status: int, reason: str) -> str:
    path = request.url.path
    if status == 404 and reason == "Not Found":
        return f"There is no page at {path}."
    if status == 405:
        return f"The page {path} does not take a {request.method} request."
    if status == 500:
        return (
            f"The page {path} could not be shown: the appliance met an error it did not "
            "expect. Logs has the details."
        )
    if status > 500:
        return f"The page {path} could not be shown: {reason}."
    return reason[:1].upper() + reason[1:] + "."


def refused(render: Renderer) -> Refused:
    """The page the gate shows a browser whose role may not use what it asked
    (``balancer.front.gate``); None for the API, htmx and files, which keep its answer."""

    def page(request: Request, role: Role) -> Response | None:
        if not wants_page(request):
            return None
        who = caller(request)
        sentence = (
            f"{request.url.path} needs the role {role} or above, and {who.user} has the "
            f"role {who.role}. An administrator can change your role in Maintenance > Passwords."
        )
        title = "Not for your role"
        return render(request, "error_page.html", status=403, title=title, sentence=sentence)

    return page


def install(app: FastAPI, render: Renderer) -> None:
    """Put a page in front of the API's error answers (``balancer.front.errors``) for browsers."""
    answers = dict(app.exception_handlers)

    def page(request: Request, status: int, reason: str) -> Response:
        title = "No such page" if status == 404 else "This page cannot be shown"
        return render(
            request,
            "error_page.html",
            status=status,
            title=title,
            sentence=sentence(request, status, reason),
        )

    def wrapped(kind: type[Exception], status: int | None = None) -> None:
        answer = answers.get(kind)

        async def handler(request: Request, error: Exception) -> Response:
            code = status if status is not None else int(getattr(error, "status_code", 500))
            if wants_page(request, signed_in=kind is not Exception):
                reason = str(getattr(error, "detail", None) or error)
                response = page(request, code, reason)
                if code == 405:
                    response.headers["Allow"] = ", ".join(allowed_methods(request))
                return response
            if answer is None:  # no answer of the API's own: Starlette's plain one
                return PlainTextResponse("Internal Server Error", status_code=code)
            result: Response = await answer(request, error)
            return result

        app.add_exception_handler(kind, handler)

    wrapped(HTTPException)
    wrapped(Missing, 404)
    wrapped(NotFound, 404)
    wrapped(EngineError, 503)
    # Anything else is a fault of the appliance; Starlette still logs it with its traceback.
    wrapped(Exception, 500)
