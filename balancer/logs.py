"""Balancer's logs: one JSON object per line, so the engine's and the appliance's logs can be
read, merged and filtered by the same command."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Attributes every LogRecord has; anything else was passed in ``extra`` and is logged as a field.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


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


def read(paths: list[Path], limit: int = 200, since: float = 0.0) -> list[dict[str, Any]]:
    """The newest ``limit`` entries of all ``paths`` together, newest first."""
    entries = [entry for path in paths for entry in _entries(path) if entry["time"] >= since]
    entries.sort(key=lambda entry: entry["time"], reverse=True)
    return entries[:limit]


def _entries(path: Path) -> Iterator[dict[str, Any]]:
    try:
        with path.open(encoding="utf-8", errors="replace") as lines:
            for line in lines:
                try:
                    entry = json.loads(line)
                except ValueError:
                    entry = {"time": time.time(), "level": "info", "message": line.rstrip()}
                if isinstance(entry, dict) and isinstance(entry.get("time"), int | float):
                    yield entry
    except FileNotFoundError:
        return
