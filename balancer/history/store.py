"""The history's SQLite file: one table of points, kept in tiers of coarser and coarser steps.

Every point is ``(tier, t, series, min, avg, max, total)``. A point of the finest tier is one
sample (min, avg and max the same value); a point of a coarser tier folds the finer tier's
points of its step: the least of their minimums, the mean of their averages, the greatest of
their maximums, and for a counter the sum of their totals (a gauge has no total).

The key is ``(tier, t, series)``: a sample is appended at the end of its tier, pruning deletes
from the head, and folding reads one step of all series at once, so each write does a little of
both and no job ever runs long. Beside the points, each real server's health changes are kept
with their reason (``changes``), so a timeline says why a server was down. The file is its own,
beside balancer.db, with ``synchronous=NORMAL``: losing the last seconds of history at a power
cut is acceptable, slowing the configuration store's writes is not.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

DAY = 86_400


@dataclass(frozen=True)
class Tier:
    step: int  # seconds between points
    keep: int  # seconds of points kept, at most (the budget may keep fewer)


TIERS = (Tier(10, DAY), Tier(300, 30 * DAY), Tier(3600, 365 * DAY))
# Points kept per tier, whatever the number of series: with many series each tier keeps less
# time, so the file has a bound in bytes that no configuration can pass.
BUDGET = 8_000_000
# On disk, with the key's index and pages' slack (measured by tests/test_history.py's year).
POINT_BYTES = 52
# The schema, the series' names, and the WAL (its size is capped below, past its largest write).
OVERHEAD_BYTES = 8_000_000
# Buckets folded per write and tier: enough to catch up after a stop, little enough per write.
FOLDS_PER_WRITE = 4
# Health changes kept at most, the oldest dropped first: a flapping server cannot grow the file.
CHANGES_KEPT = 50_000
REASON_CHARS = 200  # of a reason kept: the monitors' reasons are shorter
# On disk, with the index on (server, t): 280 measured with a reason of REASON_CHARS and a
# "VS/RS" of 24 characters; labels of 64 characters each add 210.
CHANGE_BYTES = 500
# A read of more than 1/PASS_SHARE of the series picks them from one pass over the range; fewer
# are looked up by name and asked for by IN (measured on 55,000 series: IN is 10 times faster for
# 30, as fast for 20,000, and twice slower for all of them).
PASS_SHARE = 3


@dataclass(frozen=True)
class Point:
    series: str  # "kind/name/figure", e.g. "server/PSM/PSM1/connections"
    value: float  # a gauge's value, or a counter's rate per second
    total: float | None = None  # a counter's increase since the previous sample


class Stored(NamedTuple):
    # A tuple: a read of many series makes hundreds of thousands (a dataclass took 3 times longer).
    t: int
    min: float
    avg: float
    max: float
    total: float | None


@dataclass(frozen=True)
class Change:
    """A real server's health changed at ``t``: ``server`` is "VS/RS", ``reason`` the check's."""

    t: int
    server: str
    health: str
    reason: str


def keeps(tiers: Sequence[Tier], series: int, budget: int = BUDGET) -> list[int]:
    """Seconds each tier keeps for ``series`` series: its own keep, or less to stay within the
    budget, but always two steps of the next tier, which is folded from it."""
    found = []
    for index, tier in enumerate(tiers):
        fitting = budget // max(series, 1) * tier.step
        floor = 2 * tiers[index + 1].step if index + 1 < len(tiers) else tier.step
        found.append(max(min(tier.keep, fitting), floor))
    return found


def size_bound(series: int, tiers: Sequence[Tier] = TIERS, budget: int = BUDGET) -> int:
    """Bytes the file stays within for ``series`` series."""
    points = sum(
        (keep // tier.step + FOLDS_PER_WRITE) * series
        for tier, keep in zip(tiers, keeps(tiers, series, budget), strict=True)
    )
    return points * POINT_BYTES + CHANGES_KEPT * CHANGE_BYTES + OVERHEAD_BYTES


_SCHEMA = """
CREATE TABLE IF NOT EXISTS series (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: no new series takes a forgotten one's
    name TEXT NOT NULL UNIQUE,
    counter INTEGER NOT NULL,
    last INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS points (
    tier INTEGER NOT NULL,
    t INTEGER NOT NULL,
    series INTEGER NOT NULL,
    min REAL NOT NULL,
    avg REAL NOT NULL,
    max REAL NOT NULL,
    total REAL,
    PRIMARY KEY (tier, t, series)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS changes (
    t INTEGER NOT NULL,
    server TEXT NOT NULL,
    health TEXT NOT NULL,
    reason TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS changes_by_server ON changes (server, t);
-- Per tier: the seconds kept now, and where the next fold starts.
CREATE TABLE IF NOT EXISTS tiers (
    tier INTEGER PRIMARY KEY,
    step INTEGER NOT NULL,
    keep INTEGER NOT NULL,
    folded INTEGER
);
"""


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0, isolation_level=None)
    db = sqlite3.connect(path, timeout=5.0, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    db.execute(f"PRAGMA journal_size_limit = {OVERHEAD_BYTES // 2}")
    db.executescript(_SCHEMA)
    return db


class History:
    """The writer: one per node, used by one task at a time (the sampler's thread)."""

    def __init__(self, path: Path, *, tiers: Sequence[Tier] = TIERS, budget: int = BUDGET) -> None:
        self.path = path
        self.tiers = tuple(tiers)
        self.budget = budget
        self._db = connect(path)
        self._ids: dict[str, int] = dict(self._db.execute("SELECT name, id FROM series").fetchall())

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> History:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def write(self, t: int, points: Iterable[Point], changes: Iterable[Change] = ()) -> None:
        """One sample at Unix time ``t`` and the health changes since the last, in one
        transaction with this write's share of folding and pruning."""
        points = list(points)
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            rows = [
                (t, self._id(p.series, counter=p.total is not None, t=t), p.value, p.total)
                for p in points
            ]
            db.executemany("INSERT OR REPLACE INTO points VALUES (0, ?1, ?2, ?3, ?3, ?3, ?4)", rows)
            db.executemany(
                "INSERT INTO changes VALUES (?, ?, ?, ?)",
                ((c.t, c.server, c.health, c.reason[:REASON_CHARS]) for c in changes),
            )
            self._fold_and_prune(t, len(points))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def last_changes(self) -> dict[str, tuple[str, str]]:
        """Each real server's last health and reason kept: where the next changes start."""
        return {
            server: (health, reason)
            for server, health, reason in self._db.execute(
                "SELECT server, health, reason FROM changes"
                " WHERE rowid IN (SELECT max(rowid) FROM changes GROUP BY server)"
            )
        }

    def _id(self, name: str, *, counter: bool, t: int) -> int:
        found = self._ids.get(name)
        if found is None:
            cursor = self._db.execute(
                "INSERT INTO series (name, counter, last) VALUES (?, ?, ?)", (name, counter, t)
            )
            found = self._ids[name] = int(cursor.lastrowid or 0)
        return found

    def _fold_and_prune(self, now: int, series: int) -> None:
        db = self._db
        kept = keeps(self.tiers, series, self.budget)
        until = now  # the finest tier is whole up to now
        for index, (tier, keep) in enumerate(zip(self.tiers, kept, strict=True)):
            row = db.execute("SELECT folded FROM tiers WHERE tier = ?", (index,)).fetchone()
            folded: int | None = None if row is None else row[0]
            if index > 0:
                folded = until = self._fold(index, tier.step, kept[index - 1], folded, until)
            db.execute(
                "INSERT OR REPLACE INTO tiers VALUES (?, ?, ?, ?)",
                (index, tier.step, keep, folded),
            )
            db.execute("DELETE FROM points WHERE tier = ? AND t < ?", (index, now - keep))
        # A change is kept as long as the longest tier, so every down period shown has its
        # reason; by rowid, the order written, the oldest go first past the count.
        db.execute(
            "DELETE FROM changes WHERE rowid <= (SELECT max(rowid) FROM changes) - ?1 OR t < ?2",
            (CHANGES_KEPT, now - max(kept)),
        )
        # A series no point is left of (a removed service) is forgotten.
        if db.execute("DELETE FROM series WHERE last < ?", (now - max(kept),)).rowcount:
            self._ids = dict(db.execute("SELECT name, id FROM series").fetchall())

    def _fold(self, tier: int, step: int, finer_keep: int, folded: int | None, until: int) -> int:
        """Fold up to FOLDS_PER_WRITE finished buckets of the finer tier, the empty ones
        skipped; the start of the next bucket to fold. A bucket is finished once ``until``
        (now, or where the finer tier's own folding stands) is past its end."""
        db = self._db
        # Before this the finer points are gone: nothing to fold.
        start = max(folded or 0, (until - finer_keep) // step * step)
        for _ in range(FOLDS_PER_WRITE):
            (first,) = db.execute(
                "SELECT min(t) FROM points WHERE tier = ? AND t >= ?", (tier - 1, start)
            ).fetchone()
            if first is None or first // step * step + step > until:
                break
            bucket = first // step * step
            db.execute(
                "INSERT OR REPLACE INTO points"
                " SELECT ?1, ?2, series, min(min), avg(avg), max(max), sum(total) FROM points"
                " WHERE tier = ?3 AND t >= ?2 AND t < ?2 + ?4 GROUP BY series",
                (tier, bucket, tier - 1, step),
            )
            if tier == len(self.tiers) - 1:
                db.execute(
                    "UPDATE series SET last = ?1 WHERE id IN"
                    " (SELECT series FROM points WHERE tier = ?2 AND t = ?1)",
                    (bucket, tier),
                )
            start = bucket + step
        return start


@dataclass(frozen=True)
class Read:
    """The points of one tier over a range, as the API serves them."""

    step: int
    start: int
    series: dict[str, list[Stored]]
    counters: frozenset[str]  # which of ``series`` are counters (they have totals)


def known(db: sqlite3.Connection) -> list[str]:
    return [name for (name,) in db.execute("SELECT name FROM series ORDER BY name")]


def read(db: sqlite3.Connection, names: Sequence[str], start: int, end: int, now: int) -> Read:
    """From ``start`` to ``end``, of the finest tier that still holds ``start`` at ``now``
    (else the coarsest)."""
    tiers = db.execute("SELECT tier, step, keep FROM tiers ORDER BY tier").fetchall()
    if not tiers:
        return Read(step=TIERS[0].step, start=start, series={}, counters=frozenset())
    tier, step, _ = next((row for row in tiers if now - row[2] <= start), tiers[-1])
    wanted = dict.fromkeys(names)  # in the order asked, each once
    (every,) = db.execute("SELECT count(*) FROM series").fetchone()
    few = len(wanted) * PASS_SHARE <= every
    if few:
        rows = [
            row
            for name in wanted
            for row in db.execute("SELECT id, name, counter FROM series WHERE name = ?", (name,))
        ]
    else:
        rows = [
            row for row in db.execute("SELECT id, name, counter FROM series") if row[1] in wanted
        ]
    ids: dict[int, str] = {}
    counters = set()
    for key, name, counter in rows:
        ids[key] = name
        if counter:
            counters.add(name)
    found: dict[str, list[Stored]] = {name: [] for name in ids.values()}
    # One pass over the range, for all the series asked: the key is by time, not by series.
    marks = f" AND series IN ({','.join('?' * len(ids))})" if few else ""
    for series, *point in db.execute(
        "SELECT series, t, min, avg, max, total FROM points"
        f" WHERE tier = ? AND t >= ? AND t < ?{marks} ORDER BY t",
        (tier, start, end, *(ids if few else ())),
    ):
        name = ids.get(series)
        if name is not None:
            found[name].append(Stored._make(point))
    return Read(step=step, start=start, series=found, counters=frozenset(counters))


def changes(db: sqlite3.Connection, servers: Sequence[str], start: int, end: int) -> list[Change]:
    """The health changes of ``servers`` ("VS/RS") from ``start`` to ``end``, each server's
    last one before ``start`` first: the reason of a period that began before the range."""
    if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'changes'").fetchone() is None:
        return []  # a file of the version before, not yet opened by this one's writer
    found = []
    for server in servers:
        before = db.execute(
            "SELECT t, server, health, reason FROM changes WHERE server = ? AND t < ?"
            " ORDER BY t DESC LIMIT 1",
            (server, start),
        ).fetchall()
        during = db.execute(
            "SELECT t, server, health, reason FROM changes WHERE server = ? AND t >= ? AND t < ?"
            " ORDER BY t, rowid",
            (server, start, end),
        ).fetchall()
        found += [Change(*row) for row in before + during]
    return found


@dataclass(frozen=True)
class Summary:
    """The guide's Min / Avg / Max / Total of a series over a range."""

    min: float | None
    avg: float | None
    max: float | None
    total: float | None  # a counter's increase over the range; None for a gauge


def summary(points: Sequence[Stored], counter: bool) -> Summary:
    if not points:
        return Summary(None, None, None, 0.0 if counter else None)
    return Summary(
        min=min(p.min for p in points),
        avg=sum(p.avg for p in points) / len(points),
        max=max(p.max for p in points),
        total=sum(p.total or 0.0 for p in points) if counter else None,
    )
