"""Reports: traffic per virtual service and real server from the engine's counters (current
and total connections, bytes in and out), refreshed in place like System Overview; under them
the node's history over a range (the last hour to the last year) as graphs drawn on the server
(``graphs``), with the guide's Min / Avg / Max / Total as the history API gives them."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any, get_args

from fastapi import APIRouter, Request
from starlette.responses import Response

from balancer.history.query import Answer, Range, ask
from balancer.state import Counters, Overview
from balancer.web import graphs
from balancer.web.graphs import Line
from balancer.web.render import Renderer
from balancer.web.units import bitrate, moment, size

TITLE = "Reports"
RANGES: tuple[Range, ...] = get_args(Range)
# Clicking a graph narrows it to the next finer range.
FINER: dict[Range, Range] = dict(zip(RANGES[1:], RANGES[:-1], strict=True))


def router(render: Renderer) -> APIRouter:
    web = APIRouter(include_in_schema=False)
    # history.db is beside balancer.db (balancer.history).
    data_dir = render.store.path.parent

    @web.get("/lbadmin/reports")
    async def reports(request: Request, range: str = "hour") -> Response:
        chosen: Range = next((r for r in RANGES if r == range), "hour")
        view = await render.controller.overview()
        shown = await asyncio.to_thread(history, data_dir, chosen, int(time.time()))
        return render(
            request,
            "reports.html",
            title=TITLE,
            ranges=RANGES,
            chosen=chosen,
            finer=FINER.get(chosen),
            **shown,
            **_traffic(view),
        )

    @web.get("/lbadmin/reports/live")
    async def reports_live(request: Request) -> Response:
        view = await render.controller.overview()
        return render(request, "reports_live.html", **_traffic(view))

    return web


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
    figures = ("rx_bytes", "tx_bytes", "connections", "new_connections", "health")
    return [n for n in known if n == "node/load" or n.rsplit("/", 1)[-1] in figures]


def history(data_dir: Path, chosen: Range, now: int) -> dict[str, Any]:
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
                f"Bits per second received (in) and sent (out) on {nic}"
                f" over the last {answer.range}.",
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
    load_svg = graphs.line_graph(
        "System load average",
        f"The 1 minute load average over the last {answer.range}.",
        [line("1m average", "node/load")],
        unit="load",
        shown=graphs.load,
        **at,
    )
    services = []
    for vs in sorted({n.split("/")[1] for n in found if n.startswith("service/")}):
        servers = sorted({n.split("/")[2] for n in found if n.startswith(f"server/{vs}/")})
        totals = {rs: found.get(f"server/{vs}/{rs}/new_connections") for rs in servers}
        taken = {rs: (t.total or 0.0) if t else 0.0 for rs, t in totals.items()}
        served = sum(taken.values())
        services.append(
            {
                "label": vs,
                "svg": graphs.line_graph(
                    f"Connections of {vs}",
                    f"Connections open at each moment to {vs} and to each of its real servers"
                    f" over the last {answer.range}.",
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
                    f"When each real server of {vs} was up or down over the last {answer.range}.",
                    [line(rs, f"server/{vs}/{rs}/health", "min") for rs in servers],
                    **at,
                ),
            }
        )
    return {
        "bandwidth": bandwidth,
        "load": {"svg": load_svg, "figures": graphs.figures(found.get("node/load"), graphs.load)},
        "services": services,
        "step": answer.step,
    }


def bandwidth_and_load(data_dir: Path, chosen: Range, now: int) -> dict[str, Any]:
    """System Overview's Min / Avg / Max / Total beside its figures, from the same history
    question as Reports; nothing when the history cannot be read."""
    try:
        known = ask(data_dir, [], chosen, now).known
        wanted = [n for n in known if n == "node/load" or n.startswith("interface/")]
        found = ask(data_dir, wanted, chosen, now).series
    except sqlite3.Error:
        return {"history_figures": None}
    return {
        "history_figures": {
            "range": chosen,
            "load": graphs.figures(found.get("node/load"), graphs.load),
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
