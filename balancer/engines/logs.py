"""The node's logs searched as one: the engines' (the built-in engine's JSON lines, HAProxy's
own format) and the appliance's. It sits above both engines, since each engine knows how its
log is written, and ``balancer.logs``, which the engines log with, knows no engine.
"""

from __future__ import annotations

from pathlib import Path

from balancer.engines.haproxy import logs as haproxy_logs
from balancer.logs import Entry, entries, read
from balancer.validate import Invalid, Problem


def search(
    folder: Path, *, source: str | None = None, text: str | None = None, limit: int = 200
) -> list[Entry]:
    """The logs in ``folder``: the engine's (the built-in engine's, or HAProxy's), the
    appliance's, or both when ``source`` is None; newest first."""
    streams = {
        "engine": [entries(folder / "engine.log"), haproxy_logs.entries(folder / "haproxy.log")],
        "appliance": [entries(folder / "balancer.log")],
    }
    if source is not None and source not in streams:
        known = " or ".join(streams)
        raise Invalid([Problem("source", f"{source!r} is not a log: {known}")])
    chosen = streams[source] if source else [s for both in streams.values() for s in both]
    return read(chosen, limit, text=text)
