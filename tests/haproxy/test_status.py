"""The engine's status from recorded ``show stat`` replies: counters, health and reasons in the
built-in engine's words."""

from __future__ import annotations

from typing import Any

import pytest

from balancer.engines.haproxy import runtime
from balancer.engines.haproxy.status import engine_status, reason
from balancer.model import Config, HealthCheck
from balancer.state import Counters, EngineStatus
from balancer.validate import parse

from .test_runtime import recorded, recorded_config

NOW = 1_800_000_000.0


def status(name: str, config: Config, *others: str) -> EngineStatus:
    workers = [runtime.parse_stat(recorded(name))]
    workers += [runtime.parse_stat(recorded(other)) for other in others]
    return engine_status(config, 3, 4242, 1000.0, workers, now=NOW)


def servers(found: EngineStatus, service: str = "CyberArk-PSM") -> dict[str, tuple[str, str]]:
    vs = next(vs for vs in found.virtual_services if vs.label == service)
    return {rs.label: (rs.health.value, rs.reason) for rs in vs.real_servers}


def test_the_snapshot_the_builtin_engine_fills() -> None:
    found = status("show-stat.txt", recorded_config())
    assert (found.engine, found.pid, found.started, found.revision) == ("haproxy", 4242, 1000.0, 3)
    vs = found.virtual_services[0]
    assert (vs.label, vs.ip, vs.ports, vs.fallback_connections) == (
        "CyberArk-PSM",
        "127.88.0.1",
        "18500,18501",
        0,
    )
    assert vs.counters == Counters(active=1, total=5, bytes_in=12, bytes_out=32)
    psm1 = vs.real_servers[0]
    assert (psm1.ip, psm1.port, psm1.weight, psm1.state, psm1.since) == (
        "127.88.0.2",
        18600,
        100,
        "online",
        NOW - 3,
    )
    assert psm1.counters == Counters(active=1, total=3, bytes_in=6, bytes_out=16)


def test_health_and_reasons_in_the_builtin_engines_words() -> None:
    assert servers(status("show-stat.txt", recorded_config())) == {
        "PSM1": ("up", "PASS (HTTP 200)"),
        "PSM2": ("down", "expected PASS, got FAIL"),
        "PSM3": ("down", "connect refused"),
    }


def test_after_a_reload_health_comes_from_the_state_file() -> None:
    """The new worker knows PSM2 and PSM3 are down before it checks them, but not yet why in
    detail; a halted server is not checked at all."""
    assert servers(status("show-stat-halted.txt", recorded_config(state="halt"))) == {
        "PSM1": ("down", "halted: HAProxy does not check a halted server"),
        "PSM2": ("down", "Layer7 invalid response"),
        "PSM3": ("down", "connect failed: Layer4 connection problem"),
    }


def test_counters_add_up_every_worker_still_running() -> None:
    found = status("show-stat-halted.txt", recorded_config(state="halt"), "show-stat.txt")
    vs = found.virtual_services[0]
    assert vs.counters == Counters(active=1, total=5, bytes_in=12, bytes_out=32)
    assert servers(found)["PSM2"] == ("down", "Layer7 invalid response"), "health: current only"


def checks_config() -> Config:
    """The configuration ``show-stat-checks.txt`` was recorded with."""
    fast = {"interval": 0.2, "timeout": 0.5, "rise": 2, "fall": 1}

    def service(label: str, check: dict[str, Any], server: str, port: int) -> dict[str, Any]:
        return {
            "label": label,
            "ip": "127.89.0.1",
            "ports": str(port),
            "health_check": {**check, **fast},
            "real_servers": [{"label": server, "ip": "127.89.0.2", "port": 18600}],
        }

    return parse(
        {
            "virtual_services": [
                service("script", {"type": "external", "script": "/tmp/dbg/fail.sh"}, "S", 18700),
                service(
                    "status", {"type": "https", "path": "/elsewhere", "port": 18643}, "H", 18701
                ),
                service("silent", {"type": "http", "path": "/", "port": 18644}, "Q", 18702),
                service(
                    "ok",
                    {"type": "https", "path": "/psm/api/health", "expect": "PASS", "port": 18643},
                    "P",
                    18703,
                ),
            ]
        }
    )


@pytest.mark.parametrize(
    ("service", "expected"),
    [
        ("script", {"S": ("down", "script exited 2")}),
        ("status", {"H": ("down", "HTTP 404 Not Found")}),
        ("silent", {"Q": ("down", "response timeout after 0.5s")}),
        ("ok", {"P": ("up", "PASS (HTTP 200)")}),
    ],
)
def test_reasons_of_each_kind_of_check(service: str, expected: dict[str, Any]) -> None:
    assert servers(status("show-stat-checks.txt", checks_config()), service) == expected


def test_a_tcp_check_says_which_port_failed() -> None:
    check = HealthCheck(type="connect", port=3390, also_check_service_port=True, timeout=2)
    refused = "Connection refused at step {} of tcp-check (connect port 3390)"
    row = {"check_status": "L4CON", "last_chk": refused.format(1)}
    assert reason(row, check, 3389) == "connect refused"
    row = {"check_status": "L4CON", "last_chk": refused.format(2)}
    assert reason(row, check, 3389) == "service port 3389: connect refused"
    assert reason({"check_status": "L4TOUT"}, check, 3389) == "connect timeout after 2.0s"
    assert reason({"check_status": "* L4OK"}, check, 3389) == "connected"
    assert reason({"check_status": "INI"}, check, 3389) == "not checked yet"


def test_a_long_failing_page_is_quoted_short_on_one_line() -> None:
    check = HealthCheck(type="https", path="/psm/api/health", expect="PASS")
    body = "<html>\n  <body>Service\tUnavailable: the application pool is stopped</body>"
    row = {"check_status": "L7RSP", "last_chk": f"expected PASS, got {body}"}
    assert reason(row, check, 443) == "expected PASS, got <html> <body>Service Unavailable: the..."
    row = {"check_status": "L7RSP", "last_chk": "expected PASS, got "}
    assert reason(row, check, 443) == "expected PASS, got an empty body"


def test_a_server_with_no_check_is_up() -> None:
    config = parse(
        {
            "virtual_services": [
                {
                    "label": "web",
                    "ip": "10.0.0.1",
                    "ports": "80",
                    "health_check": {"type": "none"},
                    "real_servers": [{"label": "A", "ip": "10.0.0.2"}],
                }
            ]
        }
    )
    found = engine_status(config, None, 1, 0.0, [{}], now=NOW)
    assert servers(found, "web") == {"A": ("up", "no check")}
    assert found.virtual_services[0].counters == Counters()


def test_a_check_port_that_refuses_before_the_service_port() -> None:
    """``show-stat-also.txt``: a connect check on port 18999, where nothing listens, and then
    on the service port; HAProxy's tcp-check names the first step."""
    document = recorded_config(state="halt").model_dump(mode="json")
    document["virtual_services"].append(
        {
            "label": "web6",
            "ip": "::1",
            "ports": "18502",
            "health_check": {
                "type": "connect",
                "port": 18999,
                "also_check_service_port": True,
                "interval": 0.2,
            },
            "real_servers": [{"label": "v6", "ip": "::1", "port": 18601}],
        }
    )
    found = status("show-stat-also.txt", parse(document))
    assert servers(found, "web6") == {"v6": ("down", "connect refused")}
    assert servers(found)["PSM2"] == ("down", "expected PASS, got FAIL")


def test_each_checks_latency_is_its_check_duration_in_seconds() -> None:
    vs = status("show-stat.txt", recorded_config()).virtual_services[0]
    assert [rs.check_seconds for rs in vs.real_servers] == [0.002, 0.001, 0.0]
    # Before a first check, or without one, HAProxy leaves it empty: no latency, not zero.
    assert (
        engine_status(recorded_config(), 3, 4242, 1000.0, [])
        .virtual_services[0]
        .real_servers[0]
        .check_seconds
        is None
    )
