"""One shape for every error: ``{"detail": [{"field": ..., "reason": ...}]}`` and a 4xx/5xx."""

from __future__ import annotations

import re

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from balancer.configuration import Missing
from balancer.controller import CommitFailed
from balancer.engines import EngineError
from balancer.store import Conflict, NotFound
from balancer.validate import Invalid, Problem

_FIELD = re.compile(r"^([\w.\[\]-]+): (.+)$", re.S)


def reply(status: int, problems: list[Problem]) -> JSONResponse:
    detail = [{"field": p.field, "reason": p.reason} for p in problems]
    return JSONResponse({"detail": detail}, status_code=status)


def from_message(message: str) -> Problem:
    """An engine's message, "field: reason" where it names one."""
    matched = _FIELD.match(message)
    return Problem(matched.group(1), matched.group(2)) if matched else Problem("", message)


def install(app: FastAPI) -> None:
    @app.exception_handler(Invalid)
    async def invalid(_: Request, error: Invalid) -> JSONResponse:
        return reply(422, list(error.problems))

    @app.exception_handler(RequestValidationError)
    async def malformed(_: Request, error: RequestValidationError) -> JSONResponse:
        problems = []
        for item in error.errors():
            loc = [str(step) for step in item["loc"] if step not in ("body", "query", "path")]
            message = str(item["msg"]).removeprefix("Value error, ")
            problems.append(Problem(".".join(loc), message))
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

    @app.exception_handler(CommitFailed)
    async def rejected(_: Request, error: CommitFailed) -> JSONResponse:
        return reply(422, [from_message(str(error))])

    @app.exception_handler(EngineError)
    async def unreachable(_: Request, error: EngineError) -> JSONResponse:
        return reply(503, [Problem("engine", str(error))])
