"""Runtime API commands, and parsers of replies recorded from a real HAProxy 2.6.

The replies under ``recorded/`` came from the engine driving HAProxy with ``recorded_config``
(and, for the checks, ``checks_config`` in test_status.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from balancer.engines.haproxy import runtime
from balancer.model import Config
from balancer.plan import Plan, make
from balancer.validate import parse

RECORDED = Path(__file__).parent / "recorded"


def recorded(name: str) -> str:
    return (RECORDED / name).read_text()


def planned(running: Config, desired: Config) -> Plan:
    return make(running, desired, 2, 1)


def recorded_config(**changes: Any) -> Config:
    """The configuration the replies were recorded with; ``changes`` go to PSM1."""
    check = {
        "type": "https",
        "path": "/psm/api/health",
        "expect": "PASS",
        "port": 18643,
        "interval": 0.2,
        "timeout": 1,
        "rise": 2,
        "fall": 2,
    }
    servers: list[dict[str, Any]] = [
        {"label": "PSM1", "ip": "127.88.0.2", "port": 18600, **changes},
        {"label": "PSM2", "ip": "127.88.0.3", "port": 18600},
        {"label": "PSM3", "ip": "127.88.0.4"},
    ]
    return parse(
        {
            "virtual_services": [
                {
                    "label": "CyberArk-PSM",
                    "ip": "127.88.0.1",
                    "ports": "18500,18501",
                    "persistence": {"mode": "source_ip", "timeout": 600},
                    "health_check": check,
                    "fallback": {"ip": "127.88.0.9", "port": 18600},
                    "real_servers": servers,
                }
            ]
        }
    )


# --- master ---------------------------------------------------------------------------------


def test_show_proc_at_start() -> None:
    found = runtime.parse_proc(recorded("show-proc-start.txt"))
    assert (found.reloads, found.failed, found.old) == (0, 0, ())
    assert found.current not in (None, found.master)


def test_show_proc_with_an_old_worker_still_relaying() -> None:
    found = runtime.parse_proc(recorded("show-proc-old-worker.txt"))
    assert (found.master, found.current, found.old) == (24783, 24802, (24792,))
    assert (found.reloads, found.failed, found.uptime) == (2, 0, 0.0)


def test_show_proc_after_a_failed_reload_keeps_the_worker() -> None:
    found = runtime.parse_proc(recorded("show-proc-failed.txt"))
    assert (found.current, found.reloads, found.failed, found.uptime) == (24802, 3, 1, 13.0)


def test_show_proc_without_a_master_is_an_error() -> None:
    with pytest.raises(ValueError, match="no master"):
        runtime.parse_proc("Unknown command\n")


# --- worker ---------------------------------------------------------------------------------


def test_the_revision_a_worker_was_started_with() -> None:
    assert runtime.parse_revision(recorded("show-env.txt")) == 1
    assert runtime.parse_revision(recorded("show-env-none.txt")) is None
    assert runtime.show_revision() == "@1 show env BALANCER_REVISION"


def test_peers_hand_over_tables_only_once_synced() -> None:
    assert not runtime.peers_synced(recorded("show-peers-unsynced.txt"))
    assert runtime.peers_synced(recorded("show-peers-synced.txt"))
    assert runtime.peers_synced("")  # no peers section: nothing to hand over


def test_show_stat_rows_by_service_and_server() -> None:
    rows = runtime.parse_stat(recorded("show-stat.txt"))
    assert set(rows) == {
        ("CyberArk-PSM", name)
        for name in ("FRONTEND", "PSM1", "PSM2", "PSM3", "fallback", "BACKEND")
    }
    psm2 = rows[("CyberArk-PSM", "PSM2")]
    assert (psm2["status"], psm2["check_status"], psm2["last_chk"]) == (
        "DOWN",
        "L7RSP",
        "expected PASS, got FAIL",
    )


def test_show_table_names_servers_by_key_or_by_id() -> None:
    names = {1: "PSM1", 2: "PSM2"}
    entries = runtime.parse_table(recorded("show-table.txt"), names)
    assert [(e.client, e.server, e.in_use) for e in entries] == [
        ("127.88.1.1", "PSM2", False),
        ("127.88.1.2", "PSM1", False),
        ("127.88.1.3", "PSM2", False),
        ("127.88.1.4", "PSM1", False),
        ("127.88.1.9", "PSM1", True),
    ]
    assert entries[0].expires_in == 598.997
    # Entries the engine restored after a reload carry the server's id, not its name.
    restored = runtime.parse_table(recorded("show-table-restored.txt"), names)
    assert [e.server for e in restored] == ["PSM2", "PSM1", "PSM2", "PSM1", "PSM1"]
    assert runtime.parse_table(recorded("show-table-restored.txt"), {})[0].server is None


def test_server_ids_from_the_server_state() -> None:
    ids = runtime.server_ids(recorded("show-servers-state.txt"))
    assert ids == {
        ("CyberArk-PSM", "PSM1"): 1,
        ("CyberArk-PSM", "PSM2"): 2,
        ("CyberArk-PSM", "PSM3"): 3,
        ("CyberArk-PSM", "fallback"): 4,
    }


# --- commands -------------------------------------------------------------------------------


def test_commands_go_to_the_current_worker_in_batches() -> None:
    assert runtime.worker(None, "show stat") == "@1 show stat"
    assert runtime.worker(42, "show stat") == "@!42 show stat"
    lines = runtime.batches([f"c{n}" for n in range(runtime.BATCH + 1)])
    assert len(lines) == 2
    assert lines[0].startswith("@1; c0; c1; ")
    assert lines[1] == f"@1; c{runtime.BATCH}"


def test_restore_persistence_in_a_new_worker() -> None:
    entries = runtime.parse_table(recorded("show-table.txt"), {})
    assert runtime.restore("CyberArk-PSM", entries[:2], {"PSM1": 7}) == [
        "set table CyberArk-PSM key 127.88.1.2 data.server_id 7"
    ]


@pytest.mark.parametrize(
    ("before", "after", "commands"),
    [
        ({}, {"state": "drain"}, ["set weight CyberArk-PSM/PSM1 0"]),
        ({"state": "drain"}, {}, ["set weight CyberArk-PSM/PSM1 100"]),
        ({}, {"weight": 7}, ["set weight CyberArk-PSM/PSM1 7"]),
        ({}, {"state": "halt"}, ["set server CyberArk-PSM/PSM1 state maint"]),
        ({"state": "halt"}, {}, ["set server CyberArk-PSM/PSM1 state ready"]),
        (
            {"state": "halt"},
            {"weight": 5},
            ["set weight CyberArk-PSM/PSM1 5", "set server CyberArk-PSM/PSM1 state ready"],
        ),
        ({}, {"max_connections": 30}, ["set maxconn server CyberArk-PSM/PSM1 30"]),
        ({"max_connections": 30}, {}, ["set maxconn server CyberArk-PSM/PSM1 0"]),
        ({}, {}, []),
    ],
)
def test_runtime_commands_for_real_server_changes(
    before: dict[str, Any], after: dict[str, Any], commands: list[str]
) -> None:
    assert (
        runtime.runtime_commands(planned(recorded_config(**before), recorded_config(**after)))
        == commands
    )


def test_a_command_that_works_answers_blank_lines() -> None:
    assert not runtime.command_failed("\n\n")
    assert runtime.command_failed("No such server.\n")


# --- the server-state file --------------------------------------------------------------------


def test_the_next_worker_gets_health_only() -> None:
    dump = recorded("show-servers-state.txt")
    desired = recorded_config(state="halt").model_dump(mode="json")
    desired["virtual_services"][0]["real_servers"][1]["ip"] = "127.88.0.33"  # PSM2 moves
    carried = runtime.carried_state(dump, planned(recorded_config(), parse(desired)))
    lines = carried.splitlines()
    assert lines[:2] == dump.splitlines()[:2]
    rows = {line.split()[3]: line.split() for line in lines[2:]}
    assert set(rows) == {"PSM1", "PSM3"}, "a moved server is checked afresh; no fallback"
    # PSM1 keeps its health (op state 2) and takes the state the configuration gives it.
    assert rows["PSM1"][5:9] == ["2", "5", "100", "100"]
    assert rows["PSM3"][5:9] == ["0", "0", "100", "100"]


def test_a_halted_server_is_checked_afresh_when_it_returns() -> None:
    dump = recorded("show-servers-state.txt")
    carried = runtime.carried_state(dump, planned(recorded_config(state="halt"), recorded_config()))
    assert "PSM1" not in carried


def test_drain_is_weight_zero_in_the_carried_state() -> None:
    dump = recorded("show-servers-state.txt")
    carried = runtime.carried_state(
        dump, planned(recorded_config(), recorded_config(state="drain"))
    )
    psm1 = next(line.split() for line in carried.splitlines() if " PSM1 " in line)
    assert psm1[6:9] == ["0", "0", "0"]


def test_nothing_to_carry() -> None:
    assert (
        runtime.carried_state("", planned(recorded_config(), recorded_config())) == runtime.NO_STATE
    )


# --- HAProxy's refusals -------------------------------------------------------------------------


def test_a_configuration_haproxy_refuses_names_the_service() -> None:
    found = runtime.alerts(recorded("check-duplicate-server.txt"))
    assert found == [
        "parsing [/tmp/dbg/clash.cfg:40] : proxy 'web', another server named 'fallback' "
        "was already defined at line 39, please use distinct names."
    ]
    assert runtime.rejection(found) == f"virtual_services[web]: HAProxy: {found[0]}"


def test_a_reload_that_cannot_bind_names_the_ports() -> None:
    output = recorded("haproxy.out")
    worker_says = "proxy 'web6' has no server available!"
    assert worker_says in runtime.alerts(output)
    assert worker_says not in runtime.alerts(output, pid=24783)  # the master's only
    # What the master said from the reload it was asked for to its failure.
    said = output.split("Loading failure!")[0].rsplit("Reloading HAProxy", 1)[1]
    found = runtime.alerts(said, pid=24783)
    assert runtime.rejection(found) == (
        "virtual_services[CyberArk-PSM].ports: HAProxy: Binding "
        "[/tmp/dbg/rec/haproxy/haproxy.cfg:31] for proxy CyberArk-PSM: cannot bind socket "
        "(Address already in use) for [127.88.0.1:18503]"
    )


def test_a_refusal_without_a_field() -> None:
    assert runtime.rejection(["out of memory"]) == "HAProxy: out of memory"
    assert runtime.rejection([]) == "HAProxy: no reason given"


def test_tables_used_counts_each_table() -> None:
    listed = (
        "# table: CyberArk-PSM, type: ip, size:1000000, used:5\n"
        "# table: CyberArk-PSM-Web, type: ipv6, size:100, used:0\n"
    )
    assert runtime.tables_used(listed) == {"CyberArk-PSM": 5, "CyberArk-PSM-Web": 0}
    assert runtime.tables_used(recorded("show-table.txt")) == {"CyberArk-PSM": 5}
