"""The history's store: folding into coarser tiers, pruning, and its bound in bytes, on points
written directly at chosen times (no sampler, no sleeping)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from balancer.history import store
from balancer.history.store import (
    DAY,
    TIERS,
    Change,
    History,
    Point,
    Tier,
    changes,
    connect,
    keeps,
    read,
    size_bound,
)

START = 1_700_000_000 // 3600 * 3600  # on an hour, so buckets begin with the first point


def test_a_coarser_point_keeps_min_avg_max_and_total_of_the_points_it_folds(
    tmp_path: Path,
) -> None:
    with History(tmp_path / "history.db") as history:
        values = [float(v) for v in range(30)]  # one 5 min bucket of 10 s samples: 0..29
        for index, value in enumerate(values):
            t = START + 10 * index
            history.write(t, [Point("node/load", value), Point("counter/c", value, value * 10)])
        history.write(START + 300, [Point("node/load", 99.0), Point("counter/c", 1.0, 1.0)])
    db = connect(tmp_path / "history.db", readonly=True)
    five = db.execute(
        "SELECT s.name, min, avg, max, total FROM points JOIN series s ON s.id = series"
        " WHERE tier = 1 ORDER BY s.name"
    ).fetchall()
    assert five == [
        ("counter/c", 0.0, 14.5, 29.0, 4350.0),  # total: 10 * (0 + 1 + ... + 29)
        ("node/load", 0.0, 14.5, 29.0, None),  # a gauge has no total
    ]
    hour = db.execute("SELECT count(*) FROM points WHERE tier = 2").fetchone()
    assert hour == (0,)  # its hour has not ended


def test_an_hour_point_folds_the_five_minute_points(tmp_path: Path) -> None:
    with History(tmp_path / "history.db") as history:
        for minute in range(0, 61, 5):  # a sample every 5 min: each bucket holds one
            history.write(START + 60 * minute, [Point("node/load", float(minute))])
    db = connect(tmp_path / "history.db", readonly=True)
    assert db.execute("SELECT t, min, avg, max FROM points WHERE tier = 2").fetchall() == [
        (START, 0.0, 27.5, 55.0)
    ]


def test_each_tier_is_pruned_to_what_it_keeps(tmp_path: Path) -> None:
    tiers = (Tier(10, 100), Tier(50, 500), Tier(100, 1000))
    with History(tmp_path / "history.db", tiers=tiers) as history:
        for t in range(START, START + 5000, 10):
            history.write(t, [Point("node/load", 1.0)])
        now = t
    db = connect(tmp_path / "history.db", readonly=True)
    for index, tier in enumerate(tiers):
        oldest, count = db.execute(
            "SELECT min(t), count(*) FROM points WHERE tier = ?", (index,)
        ).fetchone()
        assert oldest >= now - tier.keep
        assert count <= tier.keep // tier.step + 1


def test_many_series_keep_less_time_but_enough_to_fold() -> None:
    assert keeps(TIERS, 40) == [DAY, 30 * DAY, 365 * DAY]
    few = keeps(TIERS, 55_000)
    assert 2 * TIERS[1].step <= few[0] < DAY
    assert few[1] >= 2 * TIERS[2].step
    assert size_bound(55_000) < 2 * 10**9


def test_the_file_stays_within_its_bound_after_a_year(tmp_path: Path) -> None:
    """A year and a month of hourly samples: the coarsest tier fills and is pruned."""
    series = [f"server/PSM/PSM{i}/bytes_in" for i in range(4)]
    with History(tmp_path / "history.db") as history:
        for t in range(START, START + 395 * DAY, 3600):
            history.write(t, [Point(name, 1e6 + t % 977, float(t % 1000)) for name in series])
        db = connect(tmp_path / "history.db", readonly=True)
        oldest, count = db.execute("SELECT min(t), count(*) FROM points WHERE tier = 2").fetchone()
    assert oldest >= t - 365 * DAY
    assert count <= 4 * (365 * 24 + 1)
    size = sum(os.path.getsize(p) for p in tmp_path.glob("history.db*"))
    assert size <= size_bound(len(series))


def test_a_removed_series_is_forgotten_once_its_points_are_gone(tmp_path: Path) -> None:
    tiers = (Tier(10, 100), Tier(50, 500), Tier(100, 1000))
    with History(tmp_path / "history.db", tiers=tiers) as history:
        history.write(START, [Point("service/OLD/connections", 1.0)])
        for t in range(START + 10, START + 3000, 10):
            history.write(t, [Point("node/load", 1.0)])
    db = connect(tmp_path / "history.db", readonly=True)
    assert [name for (name,) in db.execute("SELECT name FROM series")] == ["node/load"]


@pytest.mark.parametrize(("seconds", "step"), [(3600, 10), (DAY, 10), (7 * DAY, 300)])
def test_a_range_is_read_from_the_finest_tier_that_holds_it(
    tmp_path: Path, seconds: int, step: int
) -> None:
    with History(tmp_path / "history.db") as history:
        history.write(START, [Point("node/load", 1.0)])
    db = connect(tmp_path / "history.db", readonly=True)
    found = read(db, ["node/load", "nothing/such"], START - seconds, START + 1, START)
    assert found.step == step
    assert list(found.series) == ["node/load"]


def test_a_read_ends_at_its_end_bound_however_its_series_are_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = [f"server/PSM/PSM{i}/connections" for i in range(5)]
    with History(tmp_path / "history.db") as history:
        for index in range(30):
            history.write(START + 10 * index, [Point(n, float(index)) for n in names])
    db = connect(tmp_path / "history.db", readonly=True)
    now = START + 290
    passed = read(db, names[:2], START + 100, START + 150, now)  # 2 of 5: a pass
    assert [p.t - START for p in passed.series[names[0]]] == [100, 110, 120, 130, 140]
    assert [p.avg for p in passed.series[names[1]]] == [10.0, 11.0, 12.0, 13.0, 14.0]
    # Asked for by IN (2 of 5), or picked from one pass over the range: the same answer.
    monkeypatch.setattr(store, "PASS_SHARE", 1)
    assert read(db, names[:2], START + 100, START + 150, now) == passed


def test_health_changes_are_kept_with_their_reason_the_last_before_a_range_first(
    tmp_path: Path,
) -> None:
    said = [
        Change(START + 10, "PSM/PSM2", "down", "connect refused"),
        Change(START + 50, "PSM/PSM2", "up", "connected"),
        Change(START + 70, "PSM/PSM2", "down", "connect timeout after 5s"),
        Change(START + 70, "PSM/PSM1", "down", "x" * 300),
    ]
    with History(tmp_path / "history.db") as history:
        for change in said:
            history.write(change.t, [Point("node/load", 1.0)], [change])
        assert history.last_changes() == {
            "PSM/PSM2": ("down", "connect timeout after 5s"),
            "PSM/PSM1": ("down", "x" * store.REASON_CHARS),
        }
    db = connect(tmp_path / "history.db", readonly=True)
    found = changes(db, ["PSM/PSM2"], START + 40, START + 100)
    assert [(c.t - START, c.health, c.reason) for c in found] == [
        (10, "down", "connect refused"),  # why it was down as the range began
        (50, "up", "connected"),
        (70, "down", "connect timeout after 5s"),
    ]
    assert changes(db, ["PSM/PSM2"], START + 80, START + 100) == [said[2]]
    assert changes(db, ["PSM/PSM9"], START, START + 100) == []


def test_a_flapping_server_keeps_no_more_than_the_last_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store, "CHANGES_KEPT", 10)
    with History(tmp_path / "history.db") as history:
        for index in range(25):
            health = "down" if index % 2 else "up"
            change = Change(START + 10 * index, "PSM/PSM2", health, f"flap {index}")
            history.write(change.t, [Point("node/load", 1.0)], [change])
    db = connect(tmp_path / "history.db", readonly=True)
    kept = [reason for (reason,) in db.execute("SELECT reason FROM changes ORDER BY rowid")]
    assert kept == [f"flap {index}" for index in range(15, 25)]
