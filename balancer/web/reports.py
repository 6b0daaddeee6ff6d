"""Reports: traffic per virtual service and real server from the engine's counters (current
and total connections, bytes in and out), refreshed in place like System Overview; under them
the node's history over a range (the last hour to the last year) as graphs drawn on the server
(``graphs``), with the guide's Min / Avg / Max / Total as the history API gives them.

A graph zooms in: dragged across (static/reports.js fills and sends the From / To form with the
span dragged), clicked (the next finer range), or by the From / To form itself, without script."""

from __future__ import annotations

import asyncio
import calendar
import sqlite3
import time
from pathlib import Path
from typing import Annotated, Any, get_args

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from balancer.history.query import SECONDS, Answer, Range, ask
from balancer.state import Counters, Overview
from balancer.web import graphs
from balancer.web.graphs import Line
from balancer.web.render import Renderer
from balancer.web.units import bitrate, moment, size

TITLE = "Reports"
RANGES: tuple[Range, ...] = get_args(Range)
# Clicking a graph narrows it to the next finer range.
FINER: dict[Range, Range] = dict(zip(RANGES[1:], RANGES[:-1], strict=True))
# The From / To fields' form, as an <input type="datetime-local"> writes it; UTC.
FIELD_TIME = "%Y-%m-%dT%H:%M"
SHORTEST = 60  # seconds: a span is at least a minute (six 10 s points)
LOADS = (("1m average", "node/load"), ("5m average", "node/load5"), ("15m average", "node/load15"))


def router(render: Renderer) -> APIRouter:
    web = APIRouter(include_in_schema=False)
    # history.db is beside balancer.db (balancer.history).
    data_dir = render.store.path.parent

    @web.get("/lbadmin/reports")
    async def reports(
        request: Request,
        range: str = "hour",
        since: Annotated[str | None, Query(alias="from")] = None,
        until: Annotated[str | None, Query(alias="to")] = None,
    ) -> Response:
        now = int(time.time())
        named: Range = next((r for r in RANGES if r == range), "hour")
        span, span_error = (None, None) if since is None and until is None else _span(since, until)
        chosen = span or named
        view = await render.controller.overview()
        shown = await asyncio.to_thread(history, data_dir, chosen, now)
        start, end = span or (now - SECONDS[named], now)
        return render(
            request,
            "reports.html",
            title=TITLE,
            ranges=RANGES,
            chosen=None if span else named,
            during=during(chosen),
            finer=None if span else FINER.get(named),
            span_error=span_error,
            # What was typed stays in the fields, a refused span too.
            fields={
                "from": since if span_error else field_time(start),
                "to": until if span_error else field_time(end),
            },
            **shown,
            **_traffic(view),
        )

    @web.get("/lbadmin/reports/live")
    async def reports_live(request: Request) -> Response:
        view = await render.controller.overview()
        return render(request, "reports_live.html", **_traffic(view))

    return web


def field_time(t: int) -> str:
    return time.strftime(FIELD_TIME, time.gmtime(t))


def _span(since: str | None, until: str | None) -> tuple[tuple[int, int] | None, str | None]:
    """The From / To span, or the one line that says why not (then the named range is shown)."""
    times = []
    for name, text in (("From", since), ("To", until)):
        try:
            times.append(calendar.timegm(time.strptime((text or "").strip()[:16], FIELD_TIME)))
        except ValueError:
            return None, f"{name}: {text or 'nothing'!r} is not a time like 2026-12-04T02:10 (UTC)"
    if times[1] - times[0] < SHORTEST:
        return None, f"To: must be at least a minute after From ({since})"
    return (times[0], times[1]), None


def during(chosen: Range | tuple[int, int]) -> str:
    """The range in words: "the last hour", or "Dec 04 02:10 to 02:40" (UTC)."""
    if not isinstance(chosen, tuple):
        return f"the last {chosen}"
    start, end = (time.gmtime(t) for t in chosen)
    same_day = start[:3] == end[:3]
    return f"{time.strftime('%b %d %H:%M', start)} to " + time.strftime(
        "%H:%M" if same_day else "%b %d %H:%M", end
    )


def _traffic(view: Overview) -> dict[str, Any]:
    engine = view.engine
    services = []
    for vs in engine.virtual_services if engine else ():
        # Each real server's share of the service's connections: how evenly it balances.
        served = sum(rs.counters.total for rs in vs.real_servers)
        services.append(
            {
                "label": vs.label,
                "counters": _counters(vs.counters),
                "fallback": vs.fallback_connections,
                "real_servers": [
                    {
                        "label": rs.label,
                        "counters": _counters(rs.counters),
                        "share": rs.counters.total,
                        "percent": round(100 * rs.counters.total / served) if served else 0,
                    }
                    for rs in vs.real_servers
                ],
                "served": served,
            }
        )
    return {
        "overview": view,
        "services": services,
        "since": moment(engine.started) if engine else None,
    }


def _counters(counters: Counters) -> dict[str, Any]:
    return {
        "active": counters.active,
        "total": counters.total,
        "bytes_in": size(counters.bytes_in),
        "bytes_out": size(counters.bytes_out),
        # Exact, where the pointer rests: the short form hides small changes.
        "bytes_in_exact": f"{counters.bytes_in:,} bytes",
        "bytes_out_exact": f"{counters.bytes_out:,} bytes",
    }


def _names(known: list[str]) -> list[str]:
    """The series the graphs draw, of those there is history of."""
    figures = ("rx_bytes", "tx_bytes", "connections", "new_connections", "health", "check_seconds")
    return [n for n in known if n.startswith("node/load") or n.rsplit("/", 1)[-1] in figures]


def history(data_dir: Path, chosen: Range | tuple[int, int], now: int) -> dict[str, Any]:
    """The graphs of the ``chosen`` range and the figures under them; a history that cannot
    be read is said in one line."""
    try:
        answer = ask(data_dir, _names(ask(data_dir, [], chosen, now).known), chosen, now)
    except sqlite3.Error as error:
        return {"history_error": f"history: cannot be read: {error}", "graphs": None}
    return {"history_error": None, "graphs": _graphs(answer)}


def _graphs(answer: Answer) -> dict[str, Any]:
    at = {"start": answer.start, "end": answer.end, "step": answer.step}
    found = answer.series
    over = (
        "over the last " + answer.range
        if answer.range
        else "from " + during((answer.start, answer.end))
    )

    def line(label: str, name: str, value: str = "avg") -> Line:
        points = found[name].points if name in found else []
        return Line(label, [(p.t, getattr(p, value)) for p in points])

    # One that carried nothing over the range (an unused tunnel) has nothing to show, as on
    # System Overview.
    interfaces = sorted(
        {
            n.split("/")[1]
            for n, series in found.items()
            if n.startswith("interface/") and (series.max or 0) > 0
        }
    )
    bandwidth = [
        {
            "name": nic,
            "svg": graphs.line_graph(
                f"Network bandwidth of {nic}",
                f"Bits per second received (in) and sent (out) on {nic} {over}.",
                [line("in", f"interface/{nic}/rx_bytes"), line("out", f"interface/{nic}/tx_bytes")],
                unit="bit/s",
                shown=bitrate,
                **at,
            ),
            "rx": graphs.figures(found.get(f"interface/{nic}/rx_bytes"), bitrate),
            "tx": graphs.figures(found.get(f"interface/{nic}/tx_bytes"), bitrate),
        }
        for nic in interfaces
    ]
    # Those there is history of (a history of the version before has the 1 minute one only).
    loads = [(label, name) for label, name in LOADS if name in found] or list(LOADS[:1])
    load_svg = graphs.line_graph(
        "System load average",
        f"The 1, 5 and 15 minute load averages {over}.",
        [line(label, name) for label, name in loads],
        unit="load",
        shown=graphs.load,
        **at,
    )
    services = []
    # Each service's real servers, in one pass: asking each service of all the series took
    # seconds with a thousand services.
    of: dict[str, set[str]] = {}
    for name in found:
        kind, *path = name.split("/")
        if kind == "service":
            of.setdefault(path[0], set())
        elif kind == "server":
            of.setdefault(path[0], set()).add(path[1])
    for vs in sorted(of):
        servers = sorted(of[vs])
        why = {
            rs: found[f"server/{vs}/{rs}/health"].changes
            for rs in servers
            if f"server/{vs}/{rs}/health" in found
        }
        totals = {rs: found.get(f"server/{vs}/{rs}/new_connections") for rs in servers}
        taken = {rs: (t.total or 0.0) if t else 0.0 for rs, t in totals.items()}
        served = sum(taken.values())
        services.append(
            {
                "label": vs,
                "svg": graphs.line_graph(
                    f"Connections of {vs}",
                    f"Connections open at each moment to {vs} and to each of its real servers"
                    f" {over}.",
                    [line(vs, f"service/{vs}/connections")]
                    + [line(rs, f"server/{vs}/{rs}/connections") for rs in servers],
                    unit="connections",
                    shown=lambda v: f"{v:g}",
                    **at,
                ),
                "shares": [
                    {
                        "label": rs,
                        "taken": round(taken[rs]),
                        "percent": round(100 * taken[rs] / served) if served else 0,
                    }
                    for rs in servers
                ],
                "served": round(served),
                "health": graphs.timeline(
                    f"Health of the real servers of {vs}",
                    f"When each real server of {vs} was up or down {over}, and why.",
                    [line(rs, f"server/{vs}/{rs}/health", "min") for rs in servers],
                    why=why,
                    **at,
                ),
                "down": [
                    {
                        "server": down.server,
                        "since": graphs.moment_label(down.since, answer.start, answer.end),
                        "until": graphs.moment_label(down.until, answer.start, answer.end),
                        "reason": down.reason,
                    }
                    for rs in servers
                    for down in graphs.downtimes(
                        line(rs, f"server/{vs}/{rs}/health", "min"), why.get(rs, []), answer.step
                    )
                ],
                "latency": graphs.line_graph(
                    f"Health-check latency of {vs}",
                    f"How long each health check of the real servers of {vs} took {over}.",
                    [line(rs, f"server/{vs}/{rs}/check_seconds") for rs in servers],
                    unit="ms",
                    shown=lambda v: f"{v * 1000:g}",
                    **at,
                )
                if any(f"server/{vs}/{rs}/check_seconds" in found for rs in servers)
                else None,
            }
        )
    return {
        "bandwidth": bandwidth,
        "load": {
            "svg": load_svg,
            "figures": [
                (label, graphs.figures(found.get(name), graphs.load)) for label, name in loads
            ],
        },
        "services": services,
        "step": answer.step,
    }


def bandwidth_and_load(data_dir: Path, chosen: Range, now: int) -> dict[str, Any]:
    """System Overview's Min / Avg / Max / Total beside its figures, from the same history
    question as Reports; nothing when the history cannot be read."""
    try:
        known = ask(data_dir, [], chosen, now).known
        wanted = [n for n in known if n.startswith(("node/load", "interface/"))]
        found = ask(data_dir, wanted, chosen, now).series
    except sqlite3.Error:
        return {"history_figures": None}
    return {
        "history_figures": {
            "range": chosen,
            # The guide's three rows; those there is history of (the 1 min one at least).
            "loads": [
                (label, graphs.figures(found.get(name), graphs.load))
                for label, name in LOADS
                if name in found or name == LOADS[0][1]
            ],
            "interfaces": [
                {
                    "label": f"{name.split('/')[1]} {'RX' if name.endswith('rx_bytes') else 'TX'}",
                    "figures": graphs.figures(series, bitrate),
                }
                for name, series in sorted(found.items())
                if name.startswith("interface/")
            ],
        }
    }
