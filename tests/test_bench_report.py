"""The bench's report: statistics over rounds, ratios to HAProxy round by round, the targets met
or not, and what the tables and the JSON say. Pure: no proxy runs here (``make bench`` runs
them)."""

from __future__ import annotations

import json

import pytest

from bench import procfs
from bench.record import Recorder
from bench.report import (
    TARGETS,
    Metric,
    Report,
    Spread,
    Target,
    direct_not_fastest,
    document,
    markdown,
    number,
    ratios,
    scaling,
    spread,
    verdict,
)


def metric(key: str, higher: bool = True, **values: list[float | None]) -> Metric:
    columns = {name.replace("_", "-"): v for name, v in values.items()}
    return Metric(key, key.replace("_", " "), "u", higher, columns)


def test_spread_is_median_min_max_of_rounds_that_gave_a_number() -> None:
    assert spread([3.0, 1.0, 2.0]) == Spread(2.0, 1.0, 3.0)
    assert spread([4.0, None, 1.0, 2.0]) == Spread(2.0, 1.0, 4.0)
    assert spread([None, None]) is None
    assert spread([]) is None


def test_ratios_pair_rounds_not_medians() -> None:
    # The built-in engine is twice as fast in every round, while the machine's speed varies
    # from round to round: the ratio of medians would say 1.5, the rounds say 2.
    builtin = [200.0, 400.0, 100.0]
    haproxy = [100.0, 200.0, 50.0]
    assert ratios(builtin, haproxy) == [2.0, 2.0, 2.0]
    assert ratios([2.0, 600.0, 1.0], [1.0, 300.0, 100.0]) == [2.0, 2.0, 0.01]


def test_ratios_skip_rounds_missing_a_side_or_without_a_positive_denominator() -> None:
    assert ratios([1.0, None, 3.0, 4.0], [2.0, 2.0, None, 0.0]) == [0.5]
    assert ratios([5.0], [-1.0]) == []  # an added latency lost in the noise


def test_numbers_keep_about_three_figures() -> None:
    assert number(2310.4) == "2,310"
    assert number(45.24) == "45.2"
    assert number(0.874) == "0.87"
    assert number(1.5, 2) == "1.50"
    assert Spread(2.0, 1.0, 3.0).text() == "2.00 (1.00\u20133.00)"
    assert Spread(7.0, 7.0, 7.0).text() == "7.00"


@pytest.mark.parametrize(
    ("target", "ratio", "met"),
    [
        (Target("m", "t", at_least=1.5), 1.5, True),
        (Target("m", "t", at_least=1.5), 1.49, False),
        (Target("m", "t", at_most=0.7), 0.7, True),
        (Target("m", "t", at_most=0.7), 0.71, False),
    ],
)
def test_a_target_is_met_on_its_bound(target: Target, ratio: float, met: bool) -> None:
    assert target.met_by(ratio) is met


def test_verdict_is_judged_on_the_median_of_per_round_ratios() -> None:
    bulk = metric("bulk_1", builtin=[300.0, 100.0, 150.0], haproxy=[100.0, 100.0, 100.0])
    found = verdict(Target("bulk_1", "bulk", at_least=1.5), {"bulk_1": bulk})
    assert found.ratio == Spread(1.5, 1.0, 3.0)
    assert found.met is True
    assert found.text() == "met (1.50 (1.00\u20133.00)\u00d7)"
    missed = verdict(Target("bulk_1", "bulk", at_least=2.0), {"bulk_1": bulk})
    assert missed.met is False
    assert missed.text().startswith("NOT MET (1.50")


def test_a_target_against_a_variant_uses_that_column() -> None:
    bulk = metric("bulk_8", builtin=[100.0], haproxy=[50.0], haproxy_64k=[200.0])
    found = verdict(Target("bulk_8", "b", versus="haproxy-64k", at_least=1.0), {"bulk_8": bulk})
    assert found.ratio == Spread(0.5, 0.5, 0.5)
    assert found.met is False


def test_a_target_not_measured_says_so() -> None:
    assert verdict(TARGETS[0], {}).met is None
    assert verdict(TARGETS[0], {}).text() == "not measured"
    empty = metric("bulk_1", builtin=[None, None], haproxy=[1.0, 2.0])
    assert verdict(TARGETS[0], {"bulk_1": empty}).met is None


def test_targets_are_those_of_issues_5_and_16() -> None:
    goals = {(t.metric, t.versus): (t.at_least, t.at_most, t.issue) for t in TARGETS}
    for streams in (1, 8, 64):
        assert goals[(f"bulk_{streams}", "haproxy")] == (1.5, None, 5)
        assert goals[(f"bulk_{streams}", "haproxy-64k")] == (1.0, None, 5)
        assert goals[(f"bulk_{streams}", "builtin-python")] == (1.0, None, 16)
    # Issue 16's replace issue 5's looser goals on the same figures (0.75, 1.5, 0.7, 1.2).
    assert goals[("connect_50", "haproxy")] == (0.9, None, 16)
    assert goals[("added_p99", "haproxy")] == (None, 1.2, 16)
    assert goals[("idle_memory", "haproxy")] == (None, 0.5, 16)
    assert goals[("idle_cpu", "haproxy")] == (None, 1.0, 16)
    assert goals[("connect_50__2cores", "haproxy")] == (1.0, None, 16)
    assert len(TARGETS) == len(goals)  # one goal per figure and rival


def test_direct_must_beat_every_proxy() -> None:
    fast = metric("bulk_1", direct=[10.0, 11.0], builtin=[5.0, 6.0], haproxy=[4.0, 4.0])
    assert direct_not_fastest(fast) == []
    slow = metric("bulk_1", direct=[5.0], builtin=[6.0], haproxy=[4.0])
    assert direct_not_fastest(slow) == ["builtin"]
    latency = metric("p99", higher=False, direct=[50.0], builtin=[40.0], haproxy=[60.0])
    assert direct_not_fastest(latency) == ["builtin"]
    assert direct_not_fastest(metric("idle", builtin=[1.0], haproxy=[2.0])) == []


def test_scaling_is_two_cores_over_one_round_by_round() -> None:
    one = metric("c", builtin=[100.0, 200.0], haproxy=[100.0, 100.0])
    two = metric("c2", builtin=[None, None], haproxy=[180.0, 150.0])
    found = {s.column: s.factor for s in scaling(one, two)}
    assert found == {"builtin": None, "haproxy": Spread(1.65, 1.5, 1.8)}


def sample() -> Report:
    metrics = {
        "bulk_1": Metric(
            "bulk_1",
            "bulk, 1 stream",
            "MB/s",
            True,
            {
                "direct": [3000.0, 3100.0, 2900.0],
                "builtin": [2000.0, 2100.0, 1900.0],
                "haproxy": [1000.0, 1000.0, 1000.0],
                "haproxy-64k": [2000.0, 2000.0, 2000.0],
            },
        ),
        "idle_memory": Metric(
            "idle_memory",
            "memory per idle connection",
            "KiB",
            False,
            {"builtin": [2.8, 2.9, 2.7], "haproxy": [3.3, 3.3, 3.3]},
        ),
        "connect_50__2cores": Metric(
            "connect_50__2cores",
            "new connections, 2 cores",
            "conn/s",
            True,
            {"builtin": [None, None, None], "haproxy": [20000.0, 21000.0, 19000.0]},
            table="scaling",
            note="built-in: workers not available yet",
        ),
        "connect_50": Metric(
            "connect_50",
            "new connections, 50 at once",
            "conn/s",
            True,
            {"builtin": [6000.0, 6000.0, 6000.0], "haproxy": [10000.0, 10000.0, 10000.0]},
        ),
        "cpu__bulk_1": Metric(
            "cpu__bulk_1", "bulk, 1 stream", "% of a core", False, {"builtin": [99.0]}, "cpu"
        ),
    }
    return Report(metrics, "On a test machine.", problems=(), runs=12, extra={"machine": "x"})


def test_markdown_table_shows_each_cell_and_the_ratio_per_round() -> None:
    text = markdown(sample())
    assert text.startswith("On a test machine.\n")
    row = next(line for line in text.splitlines() if line.startswith("| bulk, 1 stream | MB/s"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells == [
        "bulk, 1 stream",
        "MB/s",
        "3,000 (2,900\u20133,100)",
        "2,000 (1,900\u20132,100)",
        "1,000",
        "2,000",
        "2.00 (1.90\u20132.10)\u00d7",
        "1.00 (0.95\u20131.05)\u00d7",
    ]


def test_markdown_says_met_or_not_met_for_every_target() -> None:
    text = markdown(sample())
    lines = text.splitlines()
    assert "| bulk, 1 stream | ≥ 1.5\u00d7 HAProxy | 2.00 (1.90\u20132.10) | met | 5 |" in lines
    assert (
        "| memory per idle connection | ≤ 0.5\u00d7 HAProxy | 0.85 (0.82\u20130.88) "
        "| **not met** | 16 |" in lines
    )
    assert "| new conn/s, 50 at once | ≥ 0.9\u00d7 HAProxy | 0.60 | **not met** | 16 |" in lines
    assert "| bulk, 8 streams | ≥ 1.5\u00d7 HAProxy | — | not measured | 5 |" in lines


def test_markdown_scaling_and_cpu_and_checks() -> None:
    text = markdown(sample())
    assert "- built-in: not available" in text
    assert "- HAProxy: \u00d72.00 (1.90\u20132.10)" in text
    assert "new connections, 2 cores (built-in: workers not available yet)" in text
    assert "| bulk, 1 stream | % of a core | 99.0 |" in text
    assert "Every one of the 12 runs: no byte lost, no connection failed." in text


def test_markdown_lists_problems_and_a_generator_too_slow() -> None:
    report = sample()
    slow = Metric("bulk_8", "bulk, 8 streams", "MB/s", True, {"direct": [1.0], "builtin": [2.0]})
    troubled = Report(
        {**report.metrics, "bulk_8": slow},
        report.setting,
        problems=["bulk_8 round 2 builtin: 3 connections failed"],
        runs=13,
    )
    text = markdown(troubled)
    assert "**Problems** in 13 runs:\n- bulk_8 round 2 builtin: 3 connections failed" in text
    assert "- bulk, 8 streams: built-in did as well as direct" in text


def test_json_document_has_rounds_summaries_ratios_and_verdicts() -> None:
    found = json.loads(json.dumps(document(sample())))
    bulk = found["metrics"]["bulk_1"]
    assert bulk["rounds"]["builtin"] == [2000.0, 2100.0, 1900.0]
    assert bulk["summary"]["direct"] == {"median": 3000.0, "min": 2900.0, "max": 3100.0}
    assert bulk["builtin_ratio"]["haproxy"]["rounds"] == [2.0, 2.1, 1.9]
    assert bulk["builtin_ratio"]["haproxy"]["median"] == 2.0
    assert found["metrics"]["connect_50__2cores"]["summary"] == {
        "haproxy": {"median": 20000.0, "min": 19000.0, "max": 21000.0}
    }
    targets = {(t["metric"], t["versus"]): t for t in found["targets"]}
    assert targets[("bulk_1", "haproxy")]["met"] is True
    assert targets[("idle_memory", "haproxy")]["met"] is False
    assert targets[("bulk_8", "haproxy")]["met"] is None
    assert found["machine"] == "x"
    assert found["runs"] == 12


def test_proc_parsers() -> None:
    # A command name with a space and a parenthesis; utime 250 and stime 50 clock ticks.
    stat = "42 (a b) c) S 7 42 42 0 -1 4194560 1 0 0 0 250 50 0 0 20 0 1 0 1 0 0"
    parent, user, system = procfs.parse_stat(stat)
    assert parent == 7
    assert user == pytest.approx(250 / procfs.TICKS)
    assert system == pytest.approx(50 / procfs.TICKS)
    assert procfs.parse_cpu_list("0-2,4\n") == {0, 1, 2, 4}
    assert procfs.parse_cpu_list("1") == {1}
    assert procfs.field("Name:\thaproxy\nCpus_allowed_list:\t0\n", "Cpus_allowed_list") == "0"
    limits = "Max open files            20000                20000                files     \n"
    assert procfs.field(limits, "Max open files").split()[0] == "20000"


def test_core_busy_counts_everything_but_idle_and_iowait() -> None:
    before = procfs.parse_cpu_times(
        "cpu  10 0 10 80 0 0 0 0 0 0\ncpu0 5 0 5 40 0 0 0 0 0 0\ncpu1 5 0 5 40 0 0 0 0 0 0\n"
    )
    # cpu0: 60 ticks pass, 30 user, 10 system, 5 softirq, 10 idle, 5 iowait: 45 busy (75%).
    after = procfs.parse_cpu_times(
        "cpu  0 0 0 0 0 0 0 0 0 0\ncpu0 35 0 15 50 5 0 5 0 0 0\ncpu1 5 0 5 100 0 0 0 0 0 0\n"
    )
    assert set(before) == {0, 1}
    assert procfs.busy_percent(before, after, {0}) == pytest.approx(75.0)
    assert procfs.busy_percent(before, after, {1}) == pytest.approx(0.0)
    assert procfs.busy_percent(before, before, {0}) is None


def test_added_latency_is_each_round_less_direct_of_the_same_round() -> None:
    record = Recorder(rounds=3)
    for column, p99 in (("direct", [20.0, 30.0, None]), ("builtin", [120.0, 100.0, 90.0])):
        for round_, value in enumerate(p99):
            record.put(record.values, "p99_serial__nopersist", column, round_, value)
    metrics = record.metrics({})
    added = metrics["added_p99__nopersist"]
    assert added.values == {"builtin": [100.0, 70.0, None]}
    assert added.title == "added latency one at a time (minus direct), p99, persistence off"
    assert added.higher_is_better is False
    assert metrics["p99_serial__nopersist"].unit == "µs"


def test_recorded_rows_come_in_the_order_of_the_issue_and_in_their_tables() -> None:
    record = Recorder(rounds=1)
    for key in ("idle_cpu", "connect_50__2cores", "bulk_64", "connect_50", "bulk_8", "bulk_1"):
        record.put(record.values, key, "builtin", 0, 1.0)
    record.put(record.busy, "bulk_1", "builtin", 0, 99.0)
    record.put(record.cores, "bulk_1|generator's core", "direct", 0, 100.0)
    record.put(record.cores, "bulk_1|proxy's core", "builtin", 0, 100.0)
    metrics = record.metrics({"connect_50__2cores": "not yet"})
    assert list(metrics) == [
        "bulk_1",
        "bulk_8",
        "bulk_64",
        "connect_50",
        "idle_cpu",
        "connect_50__2cores",
        "cpu__bulk_1",
        "core__bulk_1|proxy's core",
        "core__bulk_1|generator's core",
    ]
    assert metrics["connect_50__2cores"].table == "scaling"
    assert metrics["connect_50__2cores"].note == "not yet"
    assert metrics["connect_50"].higher_is_better is True
    assert metrics["cpu__bulk_1"].table == "cpu"
    assert metrics["core__bulk_1|proxy's core"].title == "bulk, 1 stream: proxy's core"


def test_issue_16_compares_the_core_with_the_python_relay_and_two_workers_with_nbthread_2() -> None:
    goals = {(t.metric, t.versus): (t.at_least, t.at_most) for t in TARGETS}
    for streams in (1, 8, 64):
        assert goals[(f"bulk_{streams}", "builtin-python")] == (1.0, None)
    assert goals[("connect_50__2cores", "haproxy")] == (1.0, None)
    core_ahead = metric("bulk_1", builtin=[90.0, 120.0], builtin_python=[100.0, 100.0])
    target = next(t for t in TARGETS if t.versus == "builtin-python")
    found = verdict(target, {"bulk_1": core_ahead})
    assert (found.met, found.ratio) == (True, Spread(1.05, 0.9, 1.2))


def test_the_proxys_cpu_per_new_connection_is_a_row_beside_the_rate_lower_better() -> None:
    record = Recorder(rounds=1)
    for key in ("cpuconn_50", "connect_50", "bulk_1"):
        record.put(record.values, key, "builtin-python", 0, 1.0)
    metrics = record.metrics({})
    assert list(metrics) == ["bulk_1", "connect_50", "cpuconn_50"]
    row = metrics["cpuconn_50"]
    assert (row.title, row.unit, row.higher_is_better) == (
        "the proxy's CPU per new connection, 50 at once", "µs", False,
    )  # fmt: skip
    assert "built-in, Python relay" in markdown(Report(metrics, "setting"))
