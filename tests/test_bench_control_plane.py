"""The control-plane bench's table: which size each goal is held to, what a run over its cap
says, and what the table and the JSON show. Pure: no appliance runs here (``make bench`` runs
them)."""

from __future__ import annotations

from bench.control_plane import (
    BY_KEY,
    GUIDE,
    JUDGED,
    LARGE,
    SMALL,
    Found,
    Results,
    as_json,
    configuration,
    figure,
    markdown,
    table,
    unmet,
    verdict,
)
from bench.report import Report
from bench.report import markdown as report_markdown

SAVE = BY_KEY["weight"]  # save + commit of a weight: at most 100 ms, at 1,000 x 10


def test_a_goal_is_judged_on_the_median_at_its_own_size_only() -> None:
    assert verdict(SAVE, JUDGED.key, Found([90.0, 120.0, 100.0])) is True
    assert verdict(SAVE, JUDGED.key, Found([90.0, 130.0, 101.0])) is False
    # 10 x 2 and 5,000 x 10 are reported for comparison, never judged.
    assert verdict(SAVE, SMALL.key, Found([900.0])) is None
    assert verdict(SAVE, LARGE.key, Found([900.0])) is None
    assert verdict(BY_KEY["cli_status"], GUIDE, Found([0.31])) is False
    assert verdict(BY_KEY["cli_status"], JUDGED.key, Found([9.0])) is None


def test_a_run_over_its_cap_is_not_met_and_nothing_measured_is_not_judged() -> None:
    assert verdict(SAVE, JUDGED.key, Found([50.0], over=30.0)) is False
    assert verdict(SAVE, JUDGED.key, Found(note="not measured: over 120 s to start")) is None
    assert verdict(SAVE, JUDGED.key, None) is None


def test_a_cell_says_median_spread_runs_and_any_cap_or_note() -> None:
    assert figure(SAVE, Found([12.0, 10.0, 15.0])) == "12.0 ms (10.0\u201315.0), 3 runs"
    assert figure(SAVE, Found([12.0])) == "12.0 ms"
    assert figure(SAVE, Found([12.0], over=30.0)) == "12.0 ms; over 30 s"
    growth = BY_KEY["db_growth"]
    extrapolated = Found([42.0], note="extrapolated from 80 saves in 60 s")
    assert figure(growth, extrapolated) == "42.0 MB; extrapolated from 80 saves in 60 s"
    assert figure(SAVE, Found()) == "not measured"


def results() -> Results:
    return {
        SMALL.key: {"weight": {"builtin": Found([5.0]), "haproxy": Found([9.0])}},
        JUDGED.key: {
            "weight": {
                "builtin": Found([80.0, 90.0], phases={"save": [50.0, 60.0]}),
                "haproxy": Found([1500.0], phases={"save": [800.0], "commit": [700.0]}),
            },
            "full_apply": {"builtin": Found(over=120.0)},
        },
    }


def test_the_table_marks_the_judged_row_and_leaves_the_others_without_a_goal() -> None:
    lines = table(results())
    assert lines[0] == "| measure | size | goal | built-in | HAProxy |"
    small, judged, full = lines[2:]
    assert small == "| save + commit: a real server's weight | 10\u00d72 |  | 5.00 ms | 9.00 ms |"
    assert judged.split(" | ")[2:] == [
        "\u2264 100 ms",
        "85.0 ms (80.0\u201390.0), 2 runs · met",
        "1,500 ms · **not met** |",
    ]
    assert full.endswith("| over 120 s · **not met** |  |")


def test_each_goal_not_met_says_where_its_time_goes_and_what_was_tried() -> None:
    found = results()
    assert [(m.key, e) for m, _, e, _ in unmet(found)] == [
        ("weight", "haproxy"),
        ("full_apply", "builtin"),
    ]
    profile = {
        "seconds": 1.5,
        "ticks": 700,
        "busy_ticks": 350,
        "ours": [["store.py:save", 300]],
        "inner": [["json/encoder.py:iterencode", 70]],
    }
    text = "\n".join(markdown(found, {"weight|haproxy": {"serve": profile}}, {}, "setting"))
    assert "#### save + commit: a real server's weight, 1,000\u00d710, HAProxy" in text
    assert "- save: 800 ms (median)\n- commit: 700 ms (median)" in text
    assert "- `balancer serve` (1.5 s sampled) was busy in 50% of 700 samples" in text
    assert "  - store.py:save: 86%" in text
    assert "    - json/encoder.py:iterencode: 20%" in text
    assert text.count("Tried:") == 2
    # The built-in engine met its goal for the weight: not listed.
    assert [line for line in text.splitlines() if line.startswith("#### ")] == [
        "#### save + commit: a real server's weight, 1,000\u00d710, HAProxy",
        "#### full apply: the whole configuration onto an empty engine, 1,000\u00d710, built-in",
    ]


def test_the_json_keeps_every_run_the_goal_and_the_verdict() -> None:
    document = as_json(results())
    judged = document[JUDGED.key]["weight"]["builtin"]
    assert judged["values"] == [80.0, 90.0]
    assert (judged["median"], judged["goal"], judged["met"]) == (85.0, 100, True)
    assert document[SMALL.key]["weight"]["haproxy"]["goal"] is None
    over = document[JUDGED.key]["full_apply"]["builtin"]
    assert (over["over_seconds"], over["met"], "median" in over) == (120.0, False, False)


def test_a_run_of_the_control_plane_alone_prints_its_section_and_no_table_of_issue_5() -> None:
    text = report_markdown(Report({}, "", sections=["## The control plane (issue 11)", "x"]))
    assert text == "## The control plane (issue 11)\nx\n"


def test_the_configuration_stays_on_loopback_with_one_port_and_persistence_each() -> None:
    document = configuration(JUDGED, 4000)
    services = document["virtual_services"]
    assert len(services) == 1000
    addresses = {vs["ip"] for vs in services}
    servers = {rs["ip"] for vs in services for rs in vs["real_servers"]}
    assert len(addresses) == 1000
    assert len(servers) == 10_000
    assert all(ip.startswith("127.") for ip in addresses | servers)
    assert not addresses & servers
    assert {vs["ports"] for vs in services} == {"4000"}
    assert {vs["persistence"]["mode"] for vs in services} == {"source_ip"}
