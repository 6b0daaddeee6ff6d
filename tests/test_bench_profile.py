"""The bench's profile of the targets not met: perf's output parsed, CPU samples sorted by where
they ran, figures per unit of work, what was tried printed under each; and the measure of what
a uvloop transport takes, run for real in its own process."""

from __future__ import annotations

import json
import subprocess
import sys

from bench import profile, tried
from bench.profile import Figures, Profile, Scenario
from bench.report import TARGETS, Report, Spread, Verdict, markdown

STAT = """# started on Tue Nov 24 21:54:59 2026

957668,,raw_syscalls:sys_enter,2982994538,100.00,321.042,K/sec
28409,,sched:sched_wakeup,2982994538,100.00,9.524,K/sec
<not supported>,,sched:sched_switch,0,100.00,,
"""

REPORT_DSO = """
    64.65%  [kernel.kallsyms]
    24.73%  libpython3.11.so.1.0
     7.11%  loop.cpython-311-x86_64-linux-gnu.so
     2.65%  libc.so.6
     0.44%  _asyncio.cpython-311-x86_64-linux-gnu.so
"""

REPORT_SYM = """
    29.38%  [kernel.kallsyms]                       [k] _raw_spin_unlock_irqrestore
     7.43%  libpython3.11.so.1.0                    [.] _PyEval_EvalFrameDefault
     1.53%  [kernel.kallsyms]                       [k] __inet_lookup_established
"""


def target(metric: str) -> Verdict:
    found = next(t for t in TARGETS if t.metric == metric)
    return Verdict(found, Spread(0.44, 0.43, 0.47), False)


def test_perf_stat_counts_by_event_and_leaves_out_what_was_not_counted() -> None:
    assert profile.parse_perf_stat(STAT) == {
        "raw_syscalls:sys_enter": 957668.0,
        "sched:sched_wakeup": 28409.0,
    }


def test_perf_report_rows_and_where_each_ran() -> None:
    rows = profile.parse_perf_report(REPORT_SYM)
    assert rows[0] == (29.38, "[kernel.kallsyms]", "_raw_spin_unlock_irqrestore")
    assert rows[1][2] == "_PyEval_EvalFrameDefault"
    shares = profile.shares(profile.parse_perf_report(REPORT_DSO))
    assert list(shares) == ["kernel", "Python interpreter", "uvloop and libuv", "libc", "other"]
    assert shares["kernel"] == 64.65
    assert profile.where("/usr/sbin/haproxy") == "HAProxy"


def test_each_target_not_met_is_profiled_on_the_scenario_that_explains_it() -> None:
    by_metric = {t.metric: profile.scenario_for(t) for t in TARGETS}
    assert by_metric["bulk_8"] == Scenario("bulk_8", "bulk, 8 streams", "MB relayed")
    assert by_metric["connect_50"] is not None
    assert by_metric["connect_50"].unit == "connection"
    added = by_metric["added_p99"]
    assert added is not None
    assert added.key == "serial"
    assert by_metric["idle_memory"] is None  # measured apart
    bulk = Scenario("bulk_1", "bulk, 1 stream", "MB relayed")
    assert profile.units_done(bulk, {"received": 3_000_000}) == 3.0
    assert profile.units_done(Scenario("serial", "x", "connection"), {"counted": 7}) == 7.0


def test_profile_table_is_per_unit_of_work_with_what_was_tried() -> None:
    scenario = Scenario("connect_50", "new connections, 50 at once", "connection")
    builtin = Figures(1000, user=0.035, system=0.064, counted={"raw_syscalls:sys_enter": 31000})
    builtin.counted["sched:sched_wakeup"] = 910
    builtin.where = {"kernel": 61.0, "Python interpreter": 27.0}
    builtin.functions = [(25.0, "[kernel.kallsyms]", "_raw_spin_unlock_irqrestore")]
    haproxy = Figures(2000, user=0.010, system=0.080, counted={"sched:sched_wakeup": 620})
    haproxy.where = {"kernel": 85.0, "HAProxy": 11.0}
    found = Profile(
        scenario, [target("connect_50")], {"builtin": builtin, "haproxy": haproxy}, True
    )
    text = "\n".join(profile.profile_lines(found, {}))
    assert "### new connections, 50 at once (new conn/s, 50 at once: NOT MET (0.44" in text
    assert "| CPU, user (µs) | 35.0 | 5.00 |" in text
    assert "| CPU, system (µs) | 64.0 | 40.0 |" in text
    assert "| system calls | 31.0 | n/a |" in text  # HAProxy's count was not taken
    assert "| wakeups of other processes | 0.91 | 0.31 |" in text
    assert "| CPU in Python interpreter | 27% |  |" in text
    assert "| CPU in HAProxy |  | 11% |" in text
    assert "Busiest functions, built-in: _raw_spin_unlock_irqrestore 25%." in text
    for line in tried.for_scenario("connect_50"):
        assert f"- {line}" in text


def test_without_perf_the_proc_figures_stay_and_the_report_says_why() -> None:
    scenario = Scenario("bulk_1", "bulk, 1 stream", "MB relayed")
    alone = Figures(0, user=1.0, system=2.0)  # a run that relayed nothing has no per-MB figure
    found = Profile(scenario, [target("bulk_1")], {"builtin": alone}, False)
    text = "\n".join(profile.profile_lines(found, {}))
    assert "| CPU, user (µs) | n/a |" in text
    assert "`perf` is not installed" in text
    assert "| CPU in" not in text


def test_memory_says_how_much_of_the_target_uvloop_transports_take() -> None:
    found = {"connections": 2000, "bytes_per_transport": 1306.0, "relay_objects_bytes": 224}
    text = "\n".join(
        profile.memory_lines(target("idle_memory"), found, {"builtin": 2.87, "haproxy": 3.46}, {})
    )
    assert "the target is 1.73 KiB or less" in text  # 0.5 x 3.46
    assert "each 1.28 KiB" in text
    assert ": 2.55 KiB, before anything" in text
    assert "The relay's own two objects take 0.22 KiB." in text


def test_the_report_ends_with_the_profile() -> None:
    report = Report({}, "setting", appendix=[profile.HEADING, "", "### x"])
    text = markdown(report)
    assert text.rstrip().endswith("### x")
    assert text.index("## Where the time goes") > text.index("Targets")


def test_a_uvloop_transport_measured_in_a_process_of_its_own() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.transports", "200"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    found = json.loads(done.stdout)
    assert found["connections"] == 200
    # A transport, its libuv handle and its buffers list are hundreds of bytes, not tens nor
    # tens of thousands.
    assert 300 < found["bytes_per_transport"] < 10_000
    assert found["relay_objects_bytes"] > 100


def test_what_was_tried_is_printed_once_for_scenarios_that_share_it() -> None:
    shown: profile.Shown = {}
    first = profile.tried_lines("bulk_1", "bulk, 1 stream", shown)
    assert first[1] == "What was tried:"
    assert len(first) == 3 + len(tried.for_scenario("bulk_1"))
    again = profile.tried_lines("bulk_64", "bulk, 64 streams", shown)
    assert again == ["", "What was tried: as for bulk, 1 stream, above."]
    assert profile.tried_lines("connect_50", "new connections", shown)[1] == "What was tried:"
