"""Balancer's logs: one JSON object per line, so the engine's and the appliance's logs can be
read, merged and filtered by the same command."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the engine's process logs with this module and has no store
    from balancer.store import Store

# A log past this size is rotated; KEEP rotated copies are kept (NAME.1 the newest). The Logs
# page and `balancer logs` read the current files whole, so these also bound what they read.
ROTATE_AT = 8 << 20
KEEP = 4
ROTATE_EVERY = 60.0  # seconds between looks at the sizes

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


def rotate(folders: Iterable[Path], *, limit: int = ROTATE_AT, keep: int = KEEP) -> list[Path]:
    """Each ``*.log`` and ``*.out`` file in ``folders`` grown past ``limit`` bytes: copied to
    NAME.1 (NAME.1 to NAME.2 and so on, the oldest dropped), then emptied in place. The files
    rotated.

    Copy and empty, not rename: every writer (this process's handler, the engine's, HAProxy's
    workers, keepalived) holds its file open for appending, so it carries on at the start of
    the emptied file with no signal and no reopen. A line written between the copy and the
    emptying is lost, as with logrotate's copytruncate; the emptying follows the copy at once.
    """
    rotated = []
    for folder in folders:
        for path in sorted([*folder.glob("*.log"), *folder.glob("*.out")]):
            try:
                if path.stat().st_size <= limit:
                    continue
            except FileNotFoundError:
                continue
            for n in range(keep - 1, 0, -1):
                older = path.with_name(f"{path.name}.{n}")
                if older.exists():
                    older.replace(path.with_name(f"{path.name}.{n + 1}"))
            with path.open("rb") as source, path.with_name(f"{path.name}.1").open("wb") as copy:
                shutil.copyfileobj(source, copy)
                os.truncate(path, 0)
            rotated.append(path)
    return rotated


async def keep_rotated(folders: Iterable[Path], every: float = ROTATE_EVERY) -> None:
    """``rotate`` ``folders`` every ``every`` seconds, until cancelled; a rotation that fails
    (a full disk) is logged and tried again at the next look."""
    folders = tuple(folders)
    log = logging.getLogger("balancer.logs")
    while True:
        try:
            for path in await asyncio.to_thread(rotate, folders):
                log.info("log rotated", extra={"event": "log_rotated", "file": path.name})
        except OSError as error:
            log.error("log rotation failed: %s", error, extra={"event": "log_rotation_failed"})
        await asyncio.sleep(every)
