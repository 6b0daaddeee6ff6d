"""One shape for every error: ``{"detail": [{"field": ..., "reason": ...}]}`` and a 4xx/5xx."""

from __future__ import annotations

import re

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.routing import Match

from balancer.configuration import Missing
from balancer.controller import CommitFailed, ForwardFailed
from balancer.engines import EngineError
from balancer.store import Conflict, NotFound, ReadOnly
from balancer.validate import Invalid, Problem, reason


class ErrorItem(BaseModel):
    field: str
    reason: str


class ErrorReply(BaseModel):
    detail: list[ErrorItem]


# What any route may answer besides its own success, documented once for all of them.
RESPONSES: dict[int | str, dict[str, object]] = {
    status: {"model": ErrorReply, "description": description}
    for status, description in (
        (400, "the body is not the JSON document it should be"),
        (401, "no session or API key (network callers only)"),
        (403, "a change made with the session cookie but without its CSRF token"),
        (404, "no such virtual service, real server, user or revision"),
        (
            409,
            "the revision given in If-Match is not the latest: someone changed it first; or "
            "this node is an HA pair's Secondary, where the configuration is read-only",
        ),
        (422, "the request or the configuration it makes is not valid: field and reason"),
        (502, "drain, halt or online on an HA pair's Secondary: the Primary did not do it"),
        (503, "the engine cannot be reached"),
    )
}

_FIELD = re.compile(r"^([\w.\[\]-]+): (.+)$", re.S)


def reply(status: int, problems: list[Problem]) -> JSONResponse:
    detail = [{"field": p.field, "reason": p.reason} for p in problems]
    return JSONResponse({"detail": detail}, status_code=status)


def from_message(message: str) -> Problem:
    """An engine's message, "field: reason" where it names one."""
    matched = _FIELD.match(message)
    return Problem(matched.group(1), matched.group(2)) if matched else Problem("", message)


def allowed_methods(request: Request) -> list[str]:
    """Every method some route takes at this path. Starlette's own 405 names only the first
    route's, though a path such as /virtual-services has one route per method."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches({**request.scope, "method": "OPTIONS"})
        if match is not Match.NONE:
            methods.update(getattr(route, "methods", None) or ())
    return sorted(methods)


def install(app: FastAPI) -> None:
    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        # FastAPI's only 400 is a body it could not parse.
        field = "body" if error.status_code == 400 else ""
        response = reply(error.status_code, [Problem(field, str(error.detail))])
        response.headers.update(error.headers or {})
        if error.status_code == 405:
            response.headers["Allow"] = ", ".join(allowed_methods(request))
        return response

    @app.exception_handler(Invalid)
    async def invalid(_: Request, error: Invalid) -> JSONResponse:
        return reply(422, list(error.problems))

    @app.exception_handler(RequestValidationError)
    async def malformed(_: Request, error: RequestValidationError) -> JSONResponse:
        problems = []
        for item in error.errors():
            loc = [
                str(step) for step in item["loc"] if step not in ("body", "query", "path", "header")
            ]
            problems.append(Problem(".".join(loc) or str(item["loc"][0]), reason(item)))
        return reply(422, problems)

    @app.exception_handler(Missing)
    async def missing(_: Request, error: Missing) -> JSONResponse:
        return reply(404, [Problem(error.field, str(error))])

    @app.exception_handler(NotFound)
    async def not_found(_: Request, error: NotFound) -> JSONResponse:
        return reply(404, [Problem("revision", str(error))])

    @app.exception_handler(Conflict)
    async def conflict(_: Request, error: Conflict) -> JSONResponse:
        return reply(409, [Problem("revision", str(error))])

    @app.exception_handler(ReadOnly)
    async def read_only(_: Request, error: ReadOnly) -> JSONResponse:
        return reply(409, list(error.problems))

    @app.exception_handler(ForwardFailed)
    async def not_forwarded(_: Request, error: ForwardFailed) -> JSONResponse:
        return reply(502, [Problem("primary", str(error))])

    @app.exception_handler(CommitFailed)
    async def rejected(_: Request, error: CommitFailed) -> JSONResponse:
        return reply(422, [from_message(str(error))])

    @app.exception_handler(EngineError)
    async def unreachable(_: Request, error: EngineError) -> JSONResponse:
        return reply(503, [Problem("engine", str(error))])
