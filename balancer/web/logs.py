"""Logs: the engine's and the appliance's logs and the audit trail, newest first, filtered by
log, by text and, in the audit trail, by user: what GET /api/v1/logs and /api/v1/audit give."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from balancer import logs
from balancer.engines.logs import search
from balancer.validate import Invalid
from balancer.web.render import Renderer
from balancer.web.units import moment

TITLE = "Logs"
SHOWN = 200  # entries on the page
AUDIT = "audit"
# What the page offers, in its order: the value sent and the words shown.
CHOICES = (
    ("", "Engine and appliance logs"),
    ("engine", "Engine log"),
    ("appliance", "Appliance log"),
    (AUDIT, "Audit trail"),
)
# An entry's own columns; any other field it has is shown beside its message.
_COLUMNS = frozenset({"time", "source", "level", "message"})


def router(render: Renderer) -> APIRouter:
    web = APIRouter(include_in_schema=False)
    # The data directory holds the store and, beside it, logs/.
    folder = render.store.path.parent / "logs"

    @web.get("/lbadmin/logs")
    def logs_page(request: Request, source: str = "", text: str = "", user: str = "") -> Response:
        problem, entries, chain = None, [], None
        try:
            if source == AUDIT:
                found = logs.audit_trail(render.store, limit=SHOWN, author=user, text=text)
                entries = [_audit(entry) for entry in found]
                chain = render.store.verify_audit()
            else:
                found = search(folder, source=source or None, text=text, limit=SHOWN)
                entries = [_logged(entry) for entry in found]
        except Invalid as error:
            problem = str(error)
        return render(
            request,
            "logs.html",
            title=TITLE,
            status=422 if problem else 200,
            problem=problem,
            choices=CHOICES,
            source=source,
            text=text,
            author=user,  # not ``user``: every page's layout shows the signed-in user by that name
            audit=source == AUDIT,
            # Whether the hash chain is whole: a broken one is said as an error.
            chain=chain,
            entries=entries,
            full=len(entries) == SHOWN,
            shown=SHOWN,
        )

    return web


def _logged(entry: dict[str, Any]) -> dict[str, Any]:
    return {
        "time": moment(entry["time"]),
        "source": entry.get("source", ""),
        "level": str(entry.get("level", "")),
        "message": str(entry.get("message", "")),
        "fields": _fields({k: v for k, v in entry.items() if k not in _COLUMNS}),
    }


def _audit(entry: dict[str, Any]) -> dict[str, Any]:
    return {
        "time": moment(entry["at"]),
        "author": entry["author"],
        "action": entry["action"],
        "target": entry["target"],
        "fields": _fields(entry["detail"]),
    }


def _fields(fields: dict[str, Any]) -> str:
    """name=value pairs, as a log line would have them; values that are not text as JSON."""
    return " ".join(
        f"{name}={value if isinstance(value, str) else json.dumps(value)}"
        for name, value in fields.items()
    )
