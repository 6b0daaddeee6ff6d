"""``GET /api/v1/metrics/history`` on the management application (fake engine): the tier that
holds the range, and the guide's Min / Avg / Max / Total of a known series."""

from __future__ import annotations

import time
from pathlib import Path

from balancer.history import FILE, History, Point
from tests.webapp import webapp

HISTORY = "/api/v1/metrics/history"


def test_a_range_is_answered_from_its_tier_with_min_avg_max_and_total(tmp_path: Path) -> None:
    now = int(time.time()) // 300 * 300
    with History(tmp_path / FILE) as history:
        for index, value in enumerate((1.0, 2.0, 6.0)):
            t = now - 20 + 10 * index  # the last finishes a 5 min bucket
            history.write(
                t, [Point("node/load", value), Point("service/PSM/bytes_in", value, 10 * value)]
            )
    with webapp(tmp_path) as app:
        hour = app.local.get(HISTORY, params={"series": "node/load,service/PSM/bytes_in"})
        assert hour.status_code == 200, hour.text
        answer = hour.json()
        assert answer["step"] == 10
        assert answer["known"] == ["node/load", "service/PSM/bytes_in"]
        load = answer["series"]["node/load"]
        assert (load["min"], load["avg"], load["max"], load["total"]) == (1.0, 3.0, 6.0, None)
        assert [p[2] for p in load["points"]] == [1.0, 2.0, 6.0]
        assert answer["series"]["service/PSM/bytes_in"]["total"] == 90.0
        week = app.local.get(HISTORY, params={"series": "node/load", "range": "week"}).json()
        assert week["step"] == 300
        assert [p[1:4] for p in week["series"]["node/load"]["points"]] == [[1.0, 1.5, 2.0]]
        year = app.local.get(HISTORY, params={"range": "year"}).json()
        assert (year["step"], year["series"]) == (3600, {})


def test_an_unknown_series_or_range_is_refused_naming_it(tmp_path: Path) -> None:
    with History(tmp_path / FILE) as history:
        history.write(int(time.time()), [Point("node/load", 1.0)])
    with webapp(tmp_path) as app:
        unknown = app.local.get(HISTORY, params={"series": "server/PSM/PSM9/health"})
        assert unknown.status_code == 404
        assert "server/PSM/PSM9/health" in unknown.text
        assert app.local.get(HISTORY, params={"range": "decade"}).status_code == 422


def test_before_the_first_sample_there_is_no_history(tmp_path: Path) -> None:
    with webapp(tmp_path) as app:
        answer = app.local.get(HISTORY, params={"range": "day"}).json()
        # A series asked before there is any history is unknown, as it is afterwards.
        asked = app.local.get(HISTORY, params={"series": "node/load1"})
    assert (answer["known"], answer["series"], answer["step"]) == ([], {}, 10)
    assert asked.status_code == 404
    assert "node/load1" in asked.text


def test_over_the_network_the_history_needs_a_signed_in_user_or_a_key(tmp_path: Path) -> None:
    with webapp(tmp_path) as app:
        assert app.network.get(HISTORY).status_code == 401
        app.sign_in()
        assert app.network.get(HISTORY).status_code == 200
