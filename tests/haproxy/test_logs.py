"""HAProxy's log lines, recorded from a real HAProxy, as Balancer's log entries."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from balancer.engines.haproxy import logs

RECORDED = Path(__file__).parent / "recorded"


def test_a_health_change_says_which_server_and_why() -> None:
    found = [e for e in logs.entries(RECORDED / "haproxy.log") if e.get("event") == "health"]
    assert [(e["service"], e["server"], e["health"], e["reason"]) for e in found] == [
        ("CyberArk-PSM", "PSM3", "down", "Connection refused"),
        ("CyberArk-PSM", "PSM2", "down", "expected PASS, got FAIL"),
        ("web6", "v6", "down", "Connection refused at step 1 of tcp-check (connect port 18999)"),
    ]
    assert {e["level"] for e in found} == {"warning"}
    assert found[0]["source"] == "haproxy"
    assert found[0]["time"] == datetime(2026, 11, 24, 18, 0, 23, 3835, tzinfo=UTC).timestamp()
    assert found[1]["message"].startswith("Server CyberArk-PSM/PSM2 is DOWN, reason: Layer7")


def test_a_connection_says_who_went_where() -> None:
    found = [e for e in logs.entries(RECORDED / "haproxy.log") if e.get("event") == "connection"]
    assert len(found) == 5
    first = found[0]
    assert (first["client"], first["service"], first["server"], first["bytes_out"]) == (
        "127.88.1.1",
        "CyberArk-PSM",
        "PSM2",
        8,
    )
    assert first["ending"] == "--"


def test_a_service_without_servers_is_an_error() -> None:
    found = [e for e in logs.entries(RECORDED / "haproxy-checks.log") if e["level"] == "error"]
    assert {(e["event"], e["service"]) for e in found} == {
        ("no_server", "script"),
        ("no_server", "status"),
        ("no_server", "silent"),
    }


def test_a_server_coming_back() -> None:
    line = (
        "2026-11-24T18:00:30.000001+00:00 Server web/A is UP, reason: Layer7 check passed, "
        "code: 200, check duration: 1ms. 1 active and 0 backup servers online."
    )
    found = logs.entry(line)
    assert found is not None
    assert (found["level"], found["health"], found["reason"]) == (
        "info",
        "up",
        "Layer7 check passed",
    )


def test_what_is_not_a_log_line_is_left_out() -> None:
    # An external check script's own output reaches the same file, without a time.
    assert logs.entry("disk full on 127.89.0.2\n") is None
    assert logs.entry("2026-13-99T00:00:00+00:00 garbled time") is None
    lines = (RECORDED / "haproxy-checks.log").read_text().splitlines()
    assert len(list(logs.entries(RECORDED / "haproxy-checks.log"))) < len(lines)
    assert list(logs.entries(RECORDED / "absent.log")) == []


def test_other_messages_keep_haproxys_words() -> None:
    found = logs.entry("2026-11-24T18:00:25.488442+00:00 Proxy CyberArk-PSM stopped (FE: 5).")
    assert found is not None
    assert (found["level"], found["message"]) == ("info", "Proxy CyberArk-PSM stopped (FE: 5).")
    assert "event" not in found
