"""The HA bench's table: each failure's goal beside its figures, judged on the median, and what
was not measured said so; the survivor's share of persistence entries at a link cut judged on
those old enough. Pure: no pair runs here (``make bench`` runs it)."""

from __future__ import annotations

from bench.ha import Found, as_json, met, table
from bench.replication import Share
from bench.report import DASH


def test_each_goal_is_judged_on_the_median_of_its_runs() -> None:
    assert met("link", Found([0.6, 1.4, 0.7])) is True
    assert met("link", Found([1.1, 0.9, 1.2])) is False
    assert met("engine", Found([1.9])) is True
    assert met("stop", Found([0.21])) is False
    assert met("stop", Found(error="stopped early")) is None
    assert met("stop", None) is None


def test_the_table_shows_goals_figures_refusals_and_verdicts() -> None:
    results = {
        "link": {"builtin": Found([0.6, 0.7, 0.65], refused=0, attempts=120)},
        "engine": {"haproxy": Found([2.5], refused=3, attempts=90)},
        "stop": {"builtin": Found(error="stopped early: no balancer ha pair")},
        "alarm": {"haproxy": Found([1.4, 1.6])},
    }
    lines = table(results)
    assert lines[0] == "| failure | goal | built-in | HAProxy |"
    link, engine, stop, alarm, heal = lines[2:]
    assert link.startswith(f"| node death (its link cut) | ≤ 1 s | 0.65 s (0.60{DASH}0.70), 3 runs")
    assert "0 of 120 attempts refused · met |  |" in link
    assert "| ≤ 2 s |  | 2.50 s, 1 run; 3 of 90 attempts refused · **not met** |" in engine
    assert "| ≤ 0.2 s | stopped early: no balancer ha pair |  |" in stop
    assert alarm.startswith("| split brain: both hold the VIP, to the alarm on a node | ≤ 3 s |  |")
    assert f"| 1.50 s (1.40{DASH}1.60), 2 runs · met |" in alarm
    assert heal.endswith("| ≤ 5 s |  |  |")
    document = as_json(results)
    assert document["engine"]["haproxy"] == {
        "seconds": [2.5], "refused": 3, "attempts": 90, "goal": 2.0, "met": False, "error": "",
    }  # fmt: skip


def test_the_survivors_share_counts_entries_old_enough_and_says_the_younger_apart() -> None:
    shares = {
        "builtin": [Share(old=90, old_present=90, young=10, young_present=7)] * 2,
        "haproxy": [Share(old=90, old_present=89, young=10, young_present=10)],
    }
    row = table({}, shares)[-1]
    assert row.startswith("| entries on the survivor of a link cut, made ≥ 1 s before | 100 % |")
    assert "| 100.0 % (180 of 180); younger: 14 of 20, 2 cuts · met |" in row
    assert "| 98.9 % (89 of 90); younger: 10 of 10, 1 cut · **not met** |" in row
    assert as_json({}, shares)["survivors"]["haproxy"] == [
        {"old": 90, "old_present": 89, "young": 10, "young_present": 10}
    ]
    assert len(table({})) == 7  # no share row when none was measured
