"""HAProxy's log lines as Balancer's log entries. Pure, but for reading the file.

The workers log to their standard output (``log stdout format iso``), which the engine points
at ``<data dir>/logs/haproxy.log``: an ISO 8601 time, a space, HAProxy's message. Each line
becomes the same kind of entry as the built-in engine's JSON lines (``balancer.logs``), so one
command shows both: health changes carry ``event: health`` with the service, server, health and
reason; connections carry ``event: connection`` with the client, service, server and bytes.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from balancer import logs

SOURCE = "haproxy"

_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\S+)\s(.*)$")
_HEALTH = re.compile(r"^Server (?P<service>[^/\s]+)/(?P<server>\S+) is (?P<health>UP|DOWN)\b")
_INFO = re.compile(r'info: "(?P<info>(?:[^"\\]|\\.)*)"')
_WHY = re.compile(r"reason: (?P<why>[^,]+)")
_CONNECTION = re.compile(
    r"^(?P<client>\S+):\d+ \[[^\]]+\] \S+ (?P<service>[^/\s]+)/(?P<server>\S+) "
    r"\S+ \+?(?P<bytes>\d+) (?P<ending>\S+) "
)
_NO_SERVER = re.compile(r"^(?:proxy|backend) (?P<service>\S+) has no server available!")


def entry(line: str) -> dict[str, Any] | None:
    """One log line as an entry; None for a line that is not HAProxy's log format."""
    found = _LINE.match(line.rstrip("\n"))
    if found is None:
        return None
    try:
        when = datetime.fromisoformat(found.group(1)).timestamp()
    except ValueError:
        return None
    message = found.group(2)
    fields: dict[str, Any] = {"time": when, "source": SOURCE, "level": "info", "message": message}
    if health := _HEALTH.match(message):
        up = health["health"] == "UP"
        why = _INFO.search(message) or _WHY.search(message)
        fields |= {
            "level": "info" if up else "warning",
            "event": "health",
            "service": health["service"],
            "server": health["server"],
            "health": "up" if up else "down",
            "reason": why.group(1) if why else "",
        }
    elif connection := _CONNECTION.match(message):
        server = connection["server"]
        fields |= {
            "event": "connection",
            "client": connection["client"],
            "service": connection["service"],
            "server": None if server.startswith("<") else server,
            "bytes_out": int(connection["bytes"]),
            "ending": connection["ending"],
        }
    elif no_server := _NO_SERVER.match(message):
        fields |= {"level": "error", "event": "no_server", "service": no_server["service"]}
    return fields


def entries(path: Path) -> Iterator[dict[str, Any]]:
    """Every entry of HAProxy's log at ``path``, oldest first."""
    return logs.entries(path, entry)
