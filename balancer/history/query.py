"""One question to the history: some series over a range, with the guide's Min / Avg / Max /
Total of each. ``GET /api/v1/metrics/history`` and the WebUI's Reports and System Overview ask
it the same way, so the figures an operator reads are the figures the API serves."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from balancer.history.sampler import FILE
from balancer.history.store import DAY, TIERS, Stored, connect, known, read, summary

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


@dataclass(frozen=True)
class Answer:
    range: Range
    step: int  # seconds between points: the tier the range is read from
    start: int  # Unix time
    end: int
    series: dict[str, Series]
    known: list[str]  # every series there is history of


def ask(data_dir: Path, names: Sequence[str], range: Range, now: int) -> Answer:
    """``names`` over the ``range`` before ``now``; raises UnknownSeries, or sqlite3.Error when
    the file cannot be read. Before the first sample there is no file, and no history: a
    series asked then is as unknown as one asked of a file that has never held it."""
    seconds = SECONDS[range]
    path = data_dir / FILE
    if not path.exists():
        _known_all(names, [])
        return Answer(range, TIERS[0].step, now - seconds, now, {}, [])
    with closing(connect(path, readonly=True)) as db:
        names_known = known(db)
        _known_all(names, names_known)
        found = read(db, names, seconds, now)
    answered = {}
    for name, points in found.series.items():
        counter = name in found.counters
        figures = summary(points, counter)
        answered[name] = Series(
            counter, figures.min, figures.avg, figures.max, figures.total, points
        )
    return Answer(range, found.step, found.start, now, answered, names_known)


def _known_all(names: Sequence[str], names_known: Sequence[str]) -> None:
    unknown = [name for name in names if name not in names_known]
    if unknown:
        raise UnknownSeries(", ".join(unknown))
