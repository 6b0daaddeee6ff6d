"""A running virtual service on a fake clock: which real server each new client gets, and what a
new configuration keeps. Health and connection counts are set directly, as the engine would."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from balancer.engines.builtin.balancing import LeastConnections, RoundRobin
from balancer.engines.builtin.service import RunningServer, RunningService
from balancer.model import VirtualService
from balancer.plan import service_change
from balancer.state import Health

CLIENTS = [f"10.1.0.{n}" for n in range(1, 13)]


class Clock:
    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


def config(*servers: dict[str, Any], **settings: Any) -> VirtualService:
    return VirtualService.model_validate(
        {
            "label": "CyberArk-PSM",
            "ip": "192.168.94.100",
            "ports": "3389",
            "real_servers": list(servers),
            **settings,
        }
    )


def rs(label: str, ip: str | None = None, **settings: Any) -> dict[str, Any]:
    return {"label": label, "ip": ip or f"192.168.94.{100 + int(label[-1])}", **settings}


PSM = (rs("PSM1"), rs("PSM2"), rs("PSM3"))
NO_PERSISTENCE: dict[str, Any] = {"persistence": {"mode": "none"}}


def running(
    *servers: dict[str, Any], clock: Clock | None = None, **settings: Any
) -> RunningService:
    return RunningService(config(*(servers or PSM), **settings), clock or Clock())


def pick(service: RunningService, client: str, *tried: str) -> str | None:
    chosen = service.choose(client, [service.servers[label] for label in tried])
    return chosen.label if chosen else None


def update(
    service: RunningService, clock: Clock, *servers: dict[str, Any], **settings: Any
) -> list[str]:
    """Reconfigure as a plan says; the servers whose health is to be found afresh."""
    change = service_change(service.config, config(*servers, **settings))
    service.reconfigure(change, clock)
    return sorted(change.rechecked)


# --- choosing ------------------------------------------------------------------------------


def test_round_robin_across_online_servers() -> None:
    service = running(**NO_PERSISTENCE)
    picks = [pick(service, "10.1.0.1") for _ in range(6)]
    assert picks == ["PSM1", "PSM2", "PSM3"] * 2


def test_weights_are_honoured() -> None:
    service = running(rs("PSM1", weight=200), rs("PSM2", weight=100), **NO_PERSISTENCE)
    assert Counter(pick(service, "10.1.0.1") for _ in range(30)) == {"PSM1": 20, "PSM2": 10}


def test_least_connections() -> None:
    service = running(balancing="least_connections", **NO_PERSISTENCE)
    service.servers["PSM1"].active = 5
    service.servers["PSM2"].active = 1
    service.servers["PSM3"].active = 3
    assert {pick(service, "10.1.0.1") for _ in range(6)} == {"PSM2"}


def test_source_ip_persistence_sticks() -> None:
    service = running()
    first = {client: pick(service, client) for client in CLIENTS}
    assert Counter(first.values()) == {"PSM1": 4, "PSM2": 4, "PSM3": 4}, "new clients spread"
    for _ in range(3):
        assert {client: pick(service, client) for client in reversed(CLIENTS)} == first
    assert service.table is not None
    assert service.table.lookup("10.1.0.1") == first["10.1.0.1"]


def test_persistence_expires_after_the_timeout() -> None:
    clock = Clock()
    service = running(clock=clock, persistence={"mode": "source_ip", "timeout": 60})
    assert pick(service, "10.1.0.1") == "PSM1"
    clock.now += 59
    assert pick(service, "10.1.0.1") == "PSM1"  # and renewed
    clock.now += 59
    assert pick(service, "10.1.0.1") == "PSM1"
    clock.now += 60
    assert pick(service, "10.1.0.1") == "PSM2", "forgotten: round robin's next turn"


def test_finished_renews_the_entry() -> None:
    clock = Clock()
    service = running(clock=clock, persistence={"mode": "source_ip", "timeout": 60})
    server = service.choose("10.1.0.1", [])
    assert server is not None
    clock.now += 3600  # one long session
    service.finished("10.1.0.1", server)
    clock.now += 59
    assert pick(service, "10.1.0.1") == server.label


def test_finished_on_the_fallback_or_a_removed_server_sticks_nothing() -> None:
    clock = Clock()
    service = running(clock=clock, fallback={"ip": "192.168.94.200", "port": 3389})
    assert service.fallback is not None
    service.finished("10.1.0.1", service.fallback)
    gone = RunningServer(config(rs("PSM9")).real_servers[0])
    service.finished("10.1.0.2", gone)
    assert service.table is not None
    assert len(service.table) == 0


def test_finished_without_persistence() -> None:
    service = running(**NO_PERSISTENCE)
    server = service.choose("10.1.0.1", [])
    assert server is not None
    service.finished("10.1.0.1", server)  # nothing to remember, nothing raised
    assert service.table is None


@pytest.mark.parametrize("change", [{"state": "drain"}, {"weight": 0}])
def test_drain_and_weight_zero_keep_stuck_clients_only(change: dict[str, Any]) -> None:
    clock = Clock()
    service = running(clock=clock)
    assert pick(service, "stuck") == "PSM1"
    update(service, clock, rs("PSM1", **change), rs("PSM2"), rs("PSM3"))
    assert {pick(service, client) for client in CLIENTS} == {"PSM2", "PSM3"}, "no new clients"
    assert pick(service, "stuck") == "PSM1", "a stuck client still goes there"
    assert pick(service, "stuck") == "PSM1"


def test_halt_sends_even_stuck_clients_elsewhere() -> None:
    clock = Clock()
    service = running(clock=clock)
    assert pick(service, "stuck") == "PSM1"
    update(service, clock, rs("PSM1", state="halt"), rs("PSM2"), rs("PSM3"))
    moved = pick(service, "stuck")
    assert moved in {"PSM2", "PSM3"}
    assert {pick(service, client) for client in CLIENTS} == {"PSM2", "PSM3"}
    update(service, clock, *PSM)  # back online: the client stays where it was moved
    assert pick(service, "stuck") == moved


def test_a_down_server_loses_its_stuck_clients_who_are_stuck_again_elsewhere() -> None:
    service = running()
    assert pick(service, "stuck") == "PSM1"
    service.servers["PSM1"].health = Health.DOWN
    moved = pick(service, "stuck")
    assert moved in {"PSM2", "PSM3"}
    assert service.table is not None
    assert service.table.lookup("stuck") == moved
    service.servers["PSM1"].health = Health.UP
    assert pick(service, "stuck") == moved, "no flapping back when PSM1 returns"
    assert "PSM1" not in {pick(service, "stuck") for _ in range(5)}


def test_a_full_server_is_skipped() -> None:
    service = running(rs("PSM1", max_connections=2), rs("PSM2"), **NO_PERSISTENCE)
    service.servers["PSM1"].active = 2
    assert {pick(service, "10.1.0.1") for _ in range(4)} == {"PSM2"}
    service.servers["PSM1"].active = 1
    assert "PSM1" in {pick(service, "10.1.0.1") for _ in range(4)}


def test_no_limit_when_max_connections_is_zero() -> None:
    service = running(rs("PSM1", max_connections=0), **NO_PERSISTENCE)
    service.servers["PSM1"].active = 1_000_000
    assert pick(service, "10.1.0.1") == "PSM1"


def test_tried_servers_are_skipped() -> None:
    service = running(**NO_PERSISTENCE)
    assert {pick(service, "10.1.0.1", "PSM1") for _ in range(6)} == {"PSM2", "PSM3"}
    assert {pick(service, "10.1.0.1", "PSM1", "PSM3") for _ in range(3)} == {"PSM2"}


def test_redispatch_of_a_stuck_client_sticks_it_to_the_new_server() -> None:
    service = running()
    assert pick(service, "stuck") == "PSM1"
    moved = pick(service, "stuck", "PSM1")  # PSM1 refused the connection
    assert moved in {"PSM2", "PSM3"}
    assert pick(service, "stuck") == moved


@pytest.mark.parametrize(
    "persistence", [{"mode": "none"}, {"mode": "source_ip"}], ids=["none", "source_ip"]
)
def test_all_unavailable_gives_none(persistence: dict[str, Any]) -> None:
    clock = Clock()
    service = running(clock=clock, persistence=persistence)
    assert pick(service, "10.1.0.1", "PSM1", "PSM2", "PSM3") is None
    for server in service.servers.values():
        server.health = Health.DOWN
    assert pick(service, "10.1.0.1") is None
    update(
        service, clock, *(rs(f"PSM{n}", state="halt") for n in (1, 2, 3)), persistence=persistence
    )
    for server in service.servers.values():
        server.health = Health.UP
    assert pick(service, "10.1.0.1") is None
    update(service, clock, *(rs(f"PSM{n}", weight=0) for n in (1, 2, 3)), persistence=persistence)
    assert pick(service, "10.1.0.1") is None
    update(service, clock, persistence=persistence)
    assert service.servers == {}
    assert pick(service, "10.1.0.1") is None


def test_a_stuck_client_waits_for_its_server_when_there_is_no_other() -> None:
    service = running(rs("PSM1"))
    assert pick(service, "stuck") == "PSM1"
    service.servers["PSM1"].health = Health.DOWN
    assert pick(service, "stuck") is None
    service.servers["PSM1"].health = Health.UP
    assert pick(service, "stuck") == "PSM1"


# --- a new configuration -------------------------------------------------------------------


def test_reconfigure_keeps_live_state_of_unchanged_servers() -> None:
    clock = Clock()
    service = running(clock=clock)
    psm1 = service.servers["PSM1"]
    psm1.health, psm1.reason, psm1.active, psm1.total = Health.DOWN, "timeout", 7, 42
    psm1.bytes_in, psm1.bytes_out = 1000, 2000
    fresh = update(service, clock, rs("PSM1", weight=50, state="drain"), rs("PSM2"), rs("PSM3"))
    assert fresh == []
    assert service.servers["PSM1"] is psm1
    assert (psm1.health, psm1.reason, psm1.active, psm1.total) == (Health.DOWN, "timeout", 7, 42)
    assert (psm1.bytes_in, psm1.bytes_out) == (1000, 2000)
    assert (psm1.weight, psm1.config.state) == (50, "drain"), "the new settings apply"


@pytest.mark.parametrize("moved", [{"ip": "192.168.94.199"}, {"port": 3390}])
def test_reconfigure_resets_a_server_whose_address_changed(moved: dict[str, Any]) -> None:
    clock = Clock()
    service = running(clock=clock)
    old = service.servers["PSM1"]
    old.health, old.active, old.total = Health.DOWN, 3, 9
    fresh = update(service, clock, {**rs("PSM1"), **moved}, rs("PSM2"), rs("PSM3"))
    assert fresh == ["PSM1"]
    new = service.servers["PSM1"]
    assert new is not old
    assert (new.health, new.active, new.total) == (Health.UP, 0, 0)


def test_reconfigure_reports_new_servers_and_drops_removed_ones() -> None:
    clock = Clock()
    service = running(clock=clock)
    psm2 = service.servers["PSM2"]
    fresh = update(service, clock, rs("PSM2"), rs("PSM4"), rs("PSM5"))
    assert fresh == ["PSM4", "PSM5"]
    assert list(service.servers) == ["PSM2", "PSM4", "PSM5"]
    assert service.servers["PSM2"] is psm2


def test_reconfigure_with_a_new_health_check_rechecks_every_server() -> None:
    clock = Clock()
    service = running(clock=clock)
    before = dict(service.servers)
    check = {"type": "https", "path": "/psm/api/health", "expect": "PASS", "port": 443}
    fresh = update(service, clock, *PSM, health_check=check)
    assert fresh == ["PSM1", "PSM2", "PSM3"]
    assert service.servers == before, "counters are kept; only health is checked afresh"
    assert update(service, clock, *PSM, health_check=check) == []


def test_reconfigure_keeps_the_persistence_table() -> None:
    clock = Clock()
    service = running(clock=clock)
    assert pick(service, "stuck") == "PSM1"
    table = service.table
    update(service, clock, rs("PSM1", weight=5), rs("PSM2"), rs("PSM3"))
    assert service.table is table
    assert pick(service, "stuck") == "PSM1"
    update(service, clock, *PSM, persistence={"mode": "source_ip", "timeout": 60, "table_size": 10})
    assert table is not None
    assert service.table is table
    assert (table.timeout, table.size) == (60, 10)
    clock.now += 61
    assert table.lookup("stuck") is None, "the new timeout applies"


def test_persistence_none_drops_the_table_and_source_ip_starts_a_new_one() -> None:
    clock = Clock()
    service = running(clock=clock)
    assert pick(service, "stuck") == "PSM1"
    update(service, clock, *PSM, **NO_PERSISTENCE)
    assert service.table is None
    assert [pick(service, "stuck") for _ in range(3)] == ["PSM2", "PSM3", "PSM1"]
    update(service, clock, *PSM)
    assert service.table is not None
    assert len(service.table) == 0


def test_reconfigure_replaces_the_scheduler_only_when_balancing_changes() -> None:
    clock = Clock()
    service = running(clock=clock)
    scheduler = service.scheduler
    assert isinstance(scheduler, RoundRobin)
    update(service, clock, rs("PSM1", weight=7), rs("PSM2"), rs("PSM3"))
    assert service.scheduler is scheduler
    update(service, clock, *PSM, balancing="least_connections")
    assert isinstance(service.scheduler, LeastConnections)


def test_reconfigure_fallback() -> None:
    clock = Clock()
    service = running(clock=clock)
    assert service.fallback is None
    update(service, clock, *PSM, fallback={"ip": "192.168.94.200", "port": 3389})
    fallback = service.fallback
    assert fallback is not None
    assert (str(fallback.config.ip), fallback.config.port) == ("192.168.94.200", 3389)
    fallback.active = 2
    update(service, clock, rs("PSM1", weight=1), fallback={"ip": "192.168.94.200", "port": 3389})
    assert service.fallback is fallback, "unchanged: kept with its counters"
    update(service, clock, *PSM, fallback={"ip": "2001:db8::200", "port": 3389})
    assert service.fallback is not fallback
    assert service.fallback is not None
    assert str(service.fallback.config.ip) == "2001:db8::200"
    update(service, clock, *PSM)
    assert service.fallback is None


def test_status_snapshot() -> None:
    service = running(rs("PSM1", port=3389), rs("PSM2", state="drain"), ports="3389,8000-8001")
    service.servers["PSM2"].health = Health.DOWN
    service.servers["PSM1"].active = 2
    status = service.status({"PSM2": ("expected PASS, got FAIL", 0.003)})
    assert (status.label, status.ip, status.ports) == (
        "CyberArk-PSM",
        "192.168.94.100",
        "3389,8000-8001",
    )
    assert [
        (s.label, s.port, s.state, s.health, s.counters.active) for s in status.real_servers
    ] == [
        ("PSM1", 3389, "online", Health.UP, 2),
        ("PSM2", None, "drain", Health.DOWN, 0),
    ]
    # The latest check's reason wins; a server not checked yet keeps its own.
    assert [s.reason for s in status.real_servers] == ["not checked yet", "expected PASS, got FAIL"]
    # And how long it took; none before a first check.
    assert [s.check_seconds for s in status.real_servers] == [None, 0.003]
