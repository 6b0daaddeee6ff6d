"""Balancer's logs: one JSON object per line, so the engine's and the appliance's logs can be
read, merged and filtered by the same command."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the engine's process logs with this module and has no store
    from balancer.store import Store

# Attributes every LogRecord has; anything else was passed in ``extra`` and is logged as a field.
# color_message is uvicorn's message again, with terminal colour codes: noise in a file.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "color_message"}
# Fields a text search does not look in: numbers that would match any digits typed.
_UNSEARCHED = frozenset({"time", "at", "id"})
# How far back a text search of the audit trail looks: the store filters by user, not by text.
AUDIT_SEARCHED = 10_000


class JsonLines(logging.Formatter):
    def __init__(self, source: str) -> None:
        super().__init__()
        self.source = source

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": record.created,
            "source": self.source,
            "level": record.levelname.lower(),
            "message": record.getMessage(),
        }
        entry.update((k, v) for k, v in vars(record).items() if k not in _STANDARD)
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def setup(path: Path, source: str, level: int = logging.INFO) -> None:
    """Send every log record of this process to ``path`` as JSON lines."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(JsonLines(source))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


Entry = dict[str, Any]


def read(
    streams: Iterable[Iterable[Entry]],
    limit: int = 200,
    since: float = 0.0,
    text: str | None = None,
) -> list[Entry]:
    """The newest ``limit`` entries of all ``streams`` together, newest first; only those
    containing ``text``, if given."""
    found = [entry for stream in streams for entry in stream if entry["time"] >= since]
    found.sort(key=lambda entry: entry["time"], reverse=True)
    return list(islice(matching(found, text), limit))


def matching(found: Iterable[Entry], text: str | None) -> Iterator[Entry]:
    """The entries with ``text`` in their message or any other field but the time, whatever
    its case; all of them if ``text`` is empty."""
    wanted = (text or "").strip().casefold()
    for entry in found:
        if not wanted or wanted in _searched(entry):
            yield entry


def _searched(entry: Entry) -> str:
    return " ".join(str(v) for k, v in entry.items() if k not in _UNSEARCHED).casefold()


def audit_trail(
    store: Store, *, limit: int = 100, author: str | None = None, text: str | None = None
) -> list[Entry]:
    """The audit trail, newest first: one user's entries if ``author`` is given; only those
    containing ``text``, among the newest ``AUDIT_SEARCHED``, if it is."""
    found = store.audit_log(AUDIT_SEARCHED if text else limit, author=author or None)
    return list(islice(matching((asdict(entry) for entry in found), text), limit))


def entries(path: Path, parse: Callable[[str], Entry | None] | None = None) -> Iterator[Entry]:
    """Every entry of the log at ``path``, oldest first; ``parse`` reads a line of a log that
    is not Balancer's own JSON lines (HAProxy's, for one)."""
    try:
        with path.open(encoding="utf-8", errors="replace") as lines:
            for line in lines:
                found = (parse or _json_entry)(line)
                if found is not None:
                    yield found
    except FileNotFoundError:
        return


def _json_entry(line: str) -> Entry | None:
    try:
        entry = json.loads(line)
    except ValueError:
        entry = {"time": time.time(), "level": "info", "message": line.rstrip()}
    if isinstance(entry, dict) and isinstance(entry.get("time"), int | float):
        return entry
    return None
