"""Every save confirms what it saved: "Saved: real server PSM2 added to CyberArk-PSM. Commit to
put it in service.", said once, on the page the save leads to.

The sentence is kept in the signed-in session, not in the URL it redirects to: a query
parameter would say it again on every reload or bookmark of that page, and a link someone else
made could say "Saved" of what was never saved. Taken once, it is gone from the next page and
from a reload.
"""

from __future__ import annotations

from fastapi import Request

from balancer.front.gate import CALLER
from balancer.front.sessions import Session
from balancer.web.render import Renderer

COMMIT = "Commit to put it in service."


def _session(render: Renderer, request: Request) -> Session | None:
    caller = request.scope.get(CALLER)
    if caller is None or caller.session is None:
        return None
    return render.access.sessions.find(caller.session, touch=False)


def tell(render: Renderer, request: Request, what: str) -> None:
    """Say ``what`` was saved on the next page this session opens."""
    session = _session(render, request)
    if session is not None:
        session.saved = f"Saved: {what}. {COMMIT}"


def told(render: Renderer, request: Request) -> str:
    """What the last save said, once; "" after that."""
    session = _session(render, request)
    if session is None:
        return ""
    said, session.saved = session.saved, ""
    return said
