"""``GET /api/v1/metrics/history``: the node's history (``balancer.history``) as JSON, the same
series the Reports graphs draw, with the guide's Min / Avg / Max / Total over the range."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel

from balancer.history import FILE
from balancer.history.store import DAY, TIERS, connect, known, read, summary

Names = Annotated[list[str] | None, Query(description="series, repeated or comma-separated")]
Range = Literal["hour", "day", "week", "month", "year"]
SECONDS: dict[str, int] = {
    "hour": 3600,
    "day": DAY,
    "week": 7 * DAY,
    "month": 30 * DAY,
    "year": 365 * DAY,
}


class SeriesHistory(BaseModel):
    counter: bool  # a rate per second, with totals; else a gauge
    min: float | None
    avg: float | None
    max: float | None
    total: float | None  # a counter's increase over the range
    points: list[tuple[int, float, float, float, float | None]]  # t, min, avg, max, total


class History(BaseModel):
    range: Range
    step: int  # seconds between points: the tier the range is read from
    start: int  # Unix time
    end: int
    series: dict[str, SeriesHistory]
    known: list[str]  # every series there is history of


def router(data_dir: Path, clock: Callable[[], float] = time.time) -> APIRouter:
    api = APIRouter(prefix="/api/v1", tags=["metrics"])

    @api.get("/metrics/history", response_model=History, summary="The node's history")
    def history(series: Names = None, range: Range = "hour") -> History:
        names = [name for each in series or () for name in each.split(",") if name]
        now, seconds = int(clock()), SECONDS[range]
        path = data_dir / FILE
        if not path.exists():
            return History(range=range, step=TIERS[0].step, start=now - seconds, end=now,
                           series={}, known=[])  # fmt: skip
        try:
            with closing(connect(path, readonly=True)) as db:
                names_known = known(db)
                unknown = [name for name in names if name not in names_known]
                if unknown:
                    raise HTTPException(404, f"series: no history of {', '.join(unknown)}")
                found = read(db, names, seconds, now)
        except sqlite3.Error as error:
            raise HTTPException(503, f"history: cannot be read: {error}") from None
        answered = {}
        for name, points in found.series.items():
            counter = name in found.counters
            figures = summary(points, counter)
            answered[name] = SeriesHistory(
                counter=counter,
                min=figures.min,
                avg=figures.avg,
                max=figures.max,
                total=figures.total,
                points=[(p.t, p.min, p.avg, p.max, p.total) for p in points],
            )
        return History(
            range=range,
            step=found.step,
            start=found.start,
            end=now,
            series=answered,
            known=names_known,
        )

    return api
