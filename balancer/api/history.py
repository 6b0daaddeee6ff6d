"""``GET /api/v1/metrics/history``: the node's history (``balancer.history``) as JSON, the same
series the Reports graphs draw, with the guide's Min / Avg / Max / Total over the range, and
each real server's health changes with their reasons."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel

from balancer.history.query import Range, UnknownSeries, ask

Names = Annotated[list[str] | None, Query(description="series, repeated or comma-separated")]
Time = Annotated[int | None, Query(description="Unix time; start and end instead of range")]


class SeriesHistory(BaseModel):
    counter: bool  # a rate per second, with totals; else a gauge
    min: float | None
    avg: float | None
    max: float | None
    total: float | None  # a counter's increase over the range
    points: list[tuple[int, float, float, float, float | None]]  # t, min, avg, max, total
    # A real server's health: each change over the range, the last before it first.
    changes: list[tuple[int, str, str]]  # t, health, reason


class History(BaseModel):
    range: Range | None  # None for a span from start to end
    step: int  # seconds between points: the tier the range is read from
    start: int  # Unix time
    end: int
    series: dict[str, SeriesHistory]
    known: list[str]  # every series there is history of


def router(data_dir: Path, clock: Callable[[], float] = time.time) -> APIRouter:
    api = APIRouter(prefix="/api/v1", tags=["metrics"])

    @api.get("/metrics/history", response_model=History, summary="The node's history")
    def history(
        series: Names = None,
        range: Range = "hour",
        start: Time = None,
        end: Time = None,
    ) -> History:
        names = [name for each in series or () for name in each.split(",") if name]
        if (start is None) != (end is None):
            raise HTTPException(422, "start, end: give both, or neither (then range)")
        span = None if start is None or end is None else (start, end)
        if span is not None and not 0 <= span[0] < span[1]:
            raise HTTPException(422, "end: must be after start")
        try:
            found = ask(data_dir, names, span or range, int(clock()))
        except UnknownSeries as error:
            raise HTTPException(404, f"series: no history of {error}") from None
        except sqlite3.Error as error:
            raise HTTPException(503, f"history: cannot be read: {error}") from None
        return History(
            range=found.range,
            step=found.step,
            start=found.start,
            end=found.end,
            series={
                name: SeriesHistory(
                    counter=each.counter,
                    min=each.min,
                    avg=each.avg,
                    max=each.max,
                    total=each.total,
                    points=[(p.t, p.min, p.avg, p.max, p.total) for p in each.points],
                    changes=[(c.t, c.health, c.reason) for c in each.changes],
                )
                for name, each in found.series.items()
            },
            known=found.known,
        )

    return api
