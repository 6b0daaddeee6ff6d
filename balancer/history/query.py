"""One question to the history: some series over a range, with the guide's Min / Avg / Max /
Total of each. ``GET /api/v1/metrics/history`` and the WebUI's Reports and System Overview ask
it the same way, so the figures an operator reads are the figures the API serves. A range is
one of the last hour to the last year, or a span between two times (a graph zoomed into)."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from balancer.history.sampler import FILE
from balancer.history.store import (
    DAY,
    TIERS,
    Change,
    Stored,
    changes,
    connect,
    known,
    read,
    summary,
)

Range = Literal["hour", "day", "week", "month", "year"]
SECONDS: dict[Range, int] = {
    "hour": 3600,
    "day": DAY,
    "week": 7 * DAY,
    "month": 30 * DAY,
    "year": 365 * DAY,
}


class UnknownSeries(LookupError):
    """A series asked for that there is no history of."""


@dataclass(frozen=True)
class Series:
    counter: bool  # a rate per second, with totals; else a gauge
    min: float | None
    avg: float | None
    max: float | None
    total: float | None  # a counter's increase over the range
    points: list[Stored]
    # A real server's health series: its changes over the range, and the last one before it.
    changes: list[Change] = field(default_factory=list)


@dataclass(frozen=True)
class Answer:
    range: Range | None  # None for a span between two times
    step: int  # seconds between points: the tier the range is read from
    start: int  # Unix time
    end: int
    series: dict[str, Series]
    known: list[str]  # every series there is history of


def ask(data_dir: Path, names: Sequence[str], range: Range | tuple[int, int], now: int) -> Answer:
    """``names`` over the ``range`` before ``now``, or between ``(start, end)``; raises
    UnknownSeries, or sqlite3.Error when the file cannot be read. Before the first sample there
    is no file, and no history: a series asked then is as unknown as one asked of a file that
    has never held it."""
    named = None if isinstance(range, tuple) else range
    start, end = range if isinstance(range, tuple) else (now - SECONDS[range], now)
    path = data_dir / FILE
    if not path.exists():
        _known_all(names, [])
        return Answer(named, TIERS[0].step, start, end, {}, [])
    with closing(connect(path, readonly=True)) as db:
        names_known = known(db)
        _known_all(names, names_known)
        found = read(db, names, start, end, now)
        health = {_server(name): name for name in found.series if _server(name)}
        changed: dict[str, list[Change]] = {}
        for change in changes(db, list(health), start, end):
            changed.setdefault(health[change.server], []).append(change)
    answered = {}
    for name, points in found.series.items():
        counter = name in found.counters
        figures = summary(points, counter)
        answered[name] = Series(
            counter,
            figures.min,
            figures.avg,
            figures.max,
            figures.total,
            points,
            changed.get(name, []),
        )
    return Answer(named, found.step, found.start, end, answered, names_known)


def _server(name: str) -> str:
    """ "VS/RS" of a real server's health series ("server/VS/RS/health"), else ""."""
    kind, _, rest = name.partition("/")
    server, _, figure = rest.rpartition("/")
    return server if kind == "server" and figure == "health" else ""


def _known_all(names: Sequence[str], names_known: Sequence[str]) -> None:
    known_set = set(names_known)
    unknown = [name for name in names if name not in known_set]
    if unknown:
        raise UnknownSeries(", ".join(unknown))
