"""The Reports graphs, drawn as SVG on the server: no script, no build, readable at 768 px
(a viewBox, scaled to the width it is given). Pure: points in, markup out.

Meaning is never in colour alone: each line has its own dash and its name in the legend, and a
down period is hatched and says "down", and why where the history kept it. A graph with nothing
to draw says "no data yet". Each graph carries its time span and plot area (``data-*``), for
the drag to zoom of static/reports.js.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from html import escape

from markupsafe import Markup

from balancer.history.query import Series
from balancer.history.store import Change
from balancer.web.units import size

WIDTH, HEIGHT = 768, 250
# The plot area inside the viewBox: room left for the value axis, below for the time axis.
LEFT, RIGHT, TOP, BOTTOM = 88, 752, 16, 196
# Each line's stroke and dash, in turn: told apart without colour too.
STYLES = (
    ("#1f5fa8", ""),
    ("#b2412d", "8 4"),
    ("#2e7d32", "2 4"),
    ("#6a3d9a", "10 4 2 4"),
    ("#8a6d00", "4 2"),
)
ROW = 30  # a timeline's row height
LEGEND_ROW = 4  # names a legend's row holds
NO_DATA = "no data yet"
MOST = (RIGHT - LEFT) // 2  # points drawn per line: one every 2 px across


@dataclass(frozen=True)
class Line:
    label: str
    points: Sequence[tuple[int, float]]  # (Unix time, value)


def x_of(t: float, start: int, end: int) -> float:
    return LEFT + (t - start) / max(end - start, 1) * (RIGHT - LEFT)


def y_of(value: float, top: float) -> float:
    return BOTTOM - value / top * (BOTTOM - TOP)


def ceiling(value: float) -> float:
    """The axis' top: 1, 2 or 5 times a power of ten, at or above ``value``."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    return float(next(m * power for m in (1, 2, 5, 10) if m * power >= value * (1 - 1e-9)))


def moment_label(t: float, start: int, end: int) -> str:
    """A time on the axis: the hour within two days, else the day (UTC, as the appliance)."""
    form = "%H:%M" if end - start <= 2 * 86_400 else "%b %d"
    return time.strftime(form, time.gmtime(t))


def _frame(
    title: str, desc: str, body: list[str], span: tuple[int, int], height: float = HEIGHT
) -> Markup:
    return Markup(
        f'<svg class="graph" viewBox="0 0 {WIDTH} {height}" width="100%" role="img"'
        f' data-start="{span[0]}" data-end="{span[1]}" data-left="{LEFT}" data-right="{RIGHT}"'
        f' aria-labelledby="{_id(title)}-t {_id(title)}-d"'
        ' xmlns="http://www.w3.org/2000/svg" font-family="sans-serif" font-size="13">'
        f'<title id="{_id(title)}-t">{escape(title)}</title>'
        f'<desc id="{_id(title)}-d">{escape(desc)}</desc>' + "".join(body) + "</svg>"
    )


def _id(title: str) -> str:
    return "g-" + "".join(c if c.isalnum() else "-" for c in title.lower())


def _time_axis(start: int, end: int, bottom: float) -> list[str]:
    body = [f'<line x1="{LEFT}" y1="{bottom}" x2="{RIGHT}" y2="{bottom}" stroke="#555"/>']
    for index in range(5):
        t = start + (end - start) * index / 4
        x = x_of(t, start, end)
        anchor = ("start", "middle", "middle", "middle", "end")[index]
        body.append(
            f'<line x1="{x:.1f}" y1="{bottom}" x2="{x:.1f}" y2="{bottom + 5}" stroke="#555"/>'
        )
        body.append(
            f'<text x="{x:.1f}" y="{bottom + 19}" text-anchor="{anchor}">'
            f"{moment_label(t, start, end)}</text>"
        )
    return body


def _empty(body: list[str]) -> list[str]:
    middle = (TOP + BOTTOM) / 2
    said = (
        f'<text class="no-data" x="{(LEFT + RIGHT) / 2}" y="{middle}" text-anchor="middle"'
        f' font-size="16" fill="#555">{NO_DATA}</text>'
    )
    return [*body, said]


def segments(points: Sequence[tuple[int, float]], step: int) -> list[list[tuple[int, float]]]:
    """The runs of points with no gap: a missed sample (an engine not read, the node off) is
    left blank, not bridged by a line that was never measured."""
    runs: list[list[tuple[int, float]]] = []
    for point in points:
        if runs and point[0] - runs[-1][-1][0] <= 2 * step:
            runs[-1].append(point)
        else:
            runs.append([point])
    return runs


def thinned(points: Sequence[tuple[int, float]], step: int) -> tuple[list[tuple[int, float]], int]:
    """At most MOST points, each the mean of a run of ``step``-apart points, and their step:
    a day of 10 s points is 8,640, more than the graph has pixels across."""
    every = max(1, math.ceil((points[-1][0] - points[0][0]) / step / MOST)) if points else 1
    if every == 1:
        return list(points), step
    buckets: dict[int, list[float]] = {}
    for t, v in points:
        buckets.setdefault(t // (step * every) * (step * every), []).append(v)
    return [(t, sum(vs) / len(vs)) for t, vs in buckets.items()], step * every


def line_graph(
    title: str,
    desc: str,
    lines: Sequence[Line],
    *,
    start: int,
    end: int,
    step: int,
    unit: str,
    shown: Callable[[float], str],
) -> Markup:
    """Lines of values over time; ``unit`` names the value axis, ``shown`` writes a value."""
    top = ceiling(max((v for line in lines for _, v in line.points), default=0.0))
    body = [
        f'<text x="12" y="{(TOP + BOTTOM) / 2}" transform="rotate(-90 12 {(TOP + BOTTOM) / 2})"'
        f' text-anchor="middle">{escape(unit)}</text>'
    ]
    for fraction in (0.0, 0.5, 1.0):
        y = y_of(top * fraction, top)
        body.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{RIGHT}" y2="{y:.1f}" stroke="#ccc"/>')
        body.append(
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{escape(shown(top * fraction))}</text>"
        )
    body += _time_axis(start, end, BOTTOM)
    if not any(line.points for line in lines):
        return _frame(title, desc, _empty(body), (start, end))
    for index, line in enumerate(lines):
        colour, dash = STYLES[index % len(STYLES)]
        dashed = f' stroke-dasharray="{dash}"' if dash else ""
        for run in segments(*thinned(line.points, step)):
            if len(run) == 1:
                t, v = run[0]
                body.append(
                    f'<circle cx="{x_of(t, start, end):.1f}" cy="{y_of(v, top):.1f}" r="2.5"'
                    f' fill="{colour}" data-line="{escape(line.label)}"/>'
                )
                continue
            placed = " ".join(f"{x_of(t, start, end):.1f},{y_of(v, top):.1f}" for t, v in run)
            body.append(
                f'<polyline points="{placed}" fill="none" stroke="{colour}" stroke-width="2"'
                f'{dashed} data-line="{escape(line.label)}"/>'
            )
        # The legend: the line's own dash beside its name.
        # Four names a row, rows added below: a service of ten real servers stays in the width.
        x = LEFT + 150 * (index % LEGEND_ROW)
        y = HEIGHT - 10 + 18 * (index // LEGEND_ROW)
        body.append(
            f'<line x1="{x}" y1="{y - 4}" x2="{x + 28}" y2="{y - 4}" stroke="{colour}"'
            f' stroke-width="2"{dashed}/>'
            f'<text x="{x + 34}" y="{y}">{escape(line.label)}</text>'
        )
    return _frame(title, desc, body, (start, end), HEIGHT + 18 * ((len(lines) - 1) // LEGEND_ROW))


def down_periods(points: Sequence[tuple[int, float]], step: int) -> list[tuple[int, int]]:
    """(from, to) of each run of points that were down (a point's minimum below 1: down at
    some time in its step), to the end of its last step."""
    periods: list[tuple[int, int]] = []
    for t, least in points:
        if least >= 1:
            continue
        if periods and t - periods[-1][1] <= step:
            periods[-1] = (periods[-1][0], t + step)
        else:
            periods.append((t, t + step))
    return periods


@dataclass(frozen=True)
class Downtime:
    """A real server down from ``since`` to ``until``, and why: the reasons its health changes
    gave over that time, in turn ("" when the history kept none)."""

    server: str
    since: int
    until: int
    reason: str


def downtimes(row: Line, changes: Sequence[Change], step: int) -> list[Downtime]:
    """``row``: a real server's health points; ``changes``: its health changes, in time (the
    last before the range first). A period's reason is the one in force as it began, then each
    one given while it lasted."""
    found = []
    for since, until in down_periods(row.points, step):
        said: list[str] = []
        for change in changes:
            if change.t < since:
                said = [change.reason] if change.health == "down" else []
            elif change.t < until and change.health == "down" and change.reason not in said:
                said.append(change.reason)
        found.append(Downtime(row.label, since, until, ", then ".join(said)))
    return found


def timeline(
    title: str,
    desc: str,
    rows: Sequence[Line],
    *,
    start: int,
    end: int,
    step: int,
    why: Mapping[str, Sequence[Change]] | None = None,
) -> Markup:
    """Each real server's health over time: a thin band while it was up, a tall hatched box
    saying "down" while it was down (its title says why, from ``why``: each row's health
    changes), nothing where there is no history."""
    height = TOP + ROW * max(len(rows), 1) + 40
    body = [
        '<defs><pattern id="down-hatch" width="6" height="6" patternUnits="userSpaceOnUse"'
        ' patternTransform="rotate(45)"><rect width="6" height="6" fill="#f3d3cd"/>'
        '<line x1="0" y1="0" x2="0" y2="6" stroke="#b2412d" stroke-width="3"/></pattern></defs>'
    ]
    bottom = TOP + ROW * max(len(rows), 1)
    body += _time_axis(start, end, bottom)
    if not any(row.points for row in rows):
        body.append(
            f'<text class="no-data" x="{(LEFT + RIGHT) / 2}" y="{TOP + ROW / 2 + 5}"'
            f' text-anchor="middle" font-size="16" fill="#555">{NO_DATA}</text>'
        )
    for index, row in enumerate(rows):
        y = TOP + ROW * index
        body.append(
            f'<text x="{LEFT - 6}" y="{y + ROW / 2 + 4}" text-anchor="end">'
            f"{escape(row.label)}</text>"
        )
        for run in segments(row.points, step):
            x1, x2 = x_of(run[0][0], start, end), x_of(min(run[-1][0] + step, end), start, end)
            body.append(
                f'<rect x="{x1:.1f}" y="{y + ROW / 2 - 2}" width="{max(x2 - x1, 1):.1f}" height="4"'
                ' fill="#2e7d32"/>'
            )
        for down in downtimes(row, (why or {}).get(row.label, ()), step):
            since, until = down.since, down.until
            x1, x2 = x_of(since, start, end), x_of(min(until, end), start, end)
            said = (
                f"{row.label} down from {moment_label(since, start, end)}"
                f" to {moment_label(until, start, end)}"
            ) + (f": {down.reason}" if down.reason else "")
            body.append(
                f'<g class="down" data-server="{escape(row.label)}"><title>{escape(said)}</title>'
                f'<rect x="{x1:.1f}" y="{y + 4}" width="{max(x2 - x1, 2):.1f}" height="{ROW - 8}"'
                ' fill="url(#down-hatch)" stroke="#b2412d"/>'
                + (
                    f'<text x="{x1 + 3:.1f}" y="{y + ROW / 2 + 4}" font-weight="bold">down</text>'
                    if x2 - x1 > 40
                    else ""
                )
                + "</g>"
            )
    return _frame(title, desc, body, (start, end), height)


@dataclass(frozen=True)
class Figures:
    """The guide's Min / Avg / Max / Total of a series as written under its graph; a dash for
    a figure the series has not (a gauge has no total), "no data yet" before any history."""

    min: str
    avg: str
    max: str
    total: str

    @property
    def known(self) -> bool:
        return self.min != NO_DATA


def figures(
    series: Series | None,
    shown: Callable[[float], str],
    total_shown: Callable[[float], str] = size,
) -> Figures:
    """``series``: the history's own figures (balancer.history.query), only written here; a
    counter's total is in bytes unless ``total_shown`` says otherwise."""
    if series is None or series.min is None or series.avg is None or series.max is None:
        return Figures(NO_DATA, NO_DATA, NO_DATA, NO_DATA)
    total = "\N{EM DASH}" if series.total is None else total_shown(series.total)
    return Figures(shown(series.min), shown(series.avg), shown(series.max), total)


def load(value: float) -> str:
    return f"{value:.2f}"
