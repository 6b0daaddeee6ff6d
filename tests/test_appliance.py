"""The whole appliance, end to end: `balancer serve`, its engine process, the lab's PSM servers,
the `balancer` command and the API, over real sockets."""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from balancer.engines import ENGINES
from balancer.lab.clients import RdpSession, rdp_lands, web_lands
from balancer.lab.process import set_mode
from tests.appliance import (
    HOSTS,
    NET,
    Appliance,
    Guide,
    guide_setup,
    wait_for,
)


@pytest.fixture
def psm(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Guide]:
    """The guide's setup; on the built-in engine unless a test asks for others."""
    with guide_setup(tmp_path, getattr(request, "param", "builtin")) as running:
        yield running


ON_BOTH_ENGINES = pytest.mark.parametrize("psm", ENGINES, indirect=True)


@pytest.fixture(scope="module")
def unchanged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guide]:
    """One appliance for the tests that must leave the configuration as they found it."""
    with guide_setup(tmp_path_factory.mktemp("unchanged")) as running:
        yield running


def sources(third: int, count: int) -> list[str]:
    return [f"127.0.{third}.{n}" for n in range(1, count + 1)]


@ON_BOTH_ENGINES
def test_twenty_clients_spread_over_both_psm_servers_and_stay_on_them(
    psm: Guide,
) -> None:
    async def scenario() -> None:
        clients = sources(60, 20)
        first_rdp = {c: await rdp_lands(psm.rdp_vip, c) for c in clients}
        first_web = {c: await web_lands(psm.web_vip, c) for c in clients}
        assert set(Counter(first_rdp.values())) == {"PSM1", "PSM2"}, first_rdp
        assert set(Counter(first_web.values())) == {"PSM1", "PSM2"}, first_web
        # Source-IP persistence: a user who reconnects lands on the same PSM server.
        assert {c: await rdp_lands(psm.rdp_vip, c) for c in clients} == first_rdp
        assert {c: await web_lands(psm.web_vip, c) for c in clients} == first_web

    asyncio.run(scenario())
    box = psm.box
    persistent = box.cli("persistence", "list", "CyberArk-PSM")
    assert persistent.stdout.count("->") == 20


@ON_BOTH_ENGINES
def test_a_failing_psm_server_takes_no_new_users_keeps_its_sessions_and_returns(
    psm: Guide,
) -> None:
    box, lab_dir = psm.box, psm.lab_dir

    async def scenario() -> None:
        sessions = [await RdpSession.open(psm.rdp_vip, c) for c in sources(61, 6)]
        on_psm2 = [s for s in sessions if s.name == "PSM2"]
        assert on_psm2, [s.name for s in sessions]

        await set_mode(lab_dir, "PSM2", "fail")
        wait_for("PSM2 to fail", lambda: box.server("CyberArk-PSM", "PSM2")["health"] == "down")
        assert box.server("CyberArk-PSM", "PSM2")["reason"] == "expected PASS, got FAIL"
        status = box.cli("status")
        assert "[FAIL]" in status.stdout
        assert "expected PASS, got FAIL" in status.stdout

        # New users, and returning users of PSM2, all go to PSM1 ...
        assert {await rdp_lands(psm.rdp_vip, c) for c in sources(62, 10)} == {"PSM1"}
        assert {await rdp_lands(psm.rdp_vip, c) for c in sources(61, 6)} == {"PSM1"}
        # ... while sessions already on PSM2 carry on.
        for session in on_psm2:
            assert await session.echo(b"still here\n")

        await set_mode(lab_dir, "PSM2", "pass")
        wait_for("PSM2 to return", lambda: box.server("CyberArk-PSM", "PSM2")["health"] == "up")
        assert "PSM2" in {await rdp_lands(psm.rdp_vip, c) for c in sources(63, 10)}
        for session in sessions:
            await session.close()

    asyncio.run(scenario())
    # Either engine's health changes reach `balancer logs`, in the same structured shape.
    changes = [
        (entry["server"], entry["health"])
        for entry in box.client.get("/logs", source="engine", limit=1000)
        if entry.get("event") == "health" and entry.get("service") == "CyberArk-PSM"
    ]
    assert changes[:2] == [("PSM2", "up"), ("PSM2", "down")]  # newest first
    logged = box.cli("logs", "--source", "engine")
    assert "PSM2" in logged.stdout
    assert "DOWN" in logged.stdout
    found = box.cli("logs", "--source", "engine", "--text", "psm2").stdout.splitlines()
    assert found
    assert all("PSM2" in line for line in found)
    assert len(found) < len(logged.stdout.splitlines())


def test_drain_takes_effect_at_once_and_leaves_pending_edits_pending(
    psm: Guide,
) -> None:
    box = psm.box
    edited = box.cli("rip", "modify", "CyberArk-PSM-Web", "PSM2", "--weight", "50")
    assert edited.returncode == 0, edited.stderr
    drained = box.cli("rip", "drain", "CyberArk-PSM", "PSM1")
    assert drained.returncode == 0, drained.stderr
    assert box.server("CyberArk-PSM", "PSM1")["state"] == "drain"
    assert box.server("CyberArk-PSM-Web", "PSM2")["weight"] == 100  # not committed yet
    pending = box.cli("changes").stdout
    assert "Change Weight of real server PSM2 in CyberArk-PSM-Web from 100 to 50" in pending
    assert "state" not in pending  # the drain is running, so it is no pending change
    assert {asyncio.run(rdp_lands(psm.rdp_vip, c)) for c in sources(64, 6)} == {"PSM2"}

    assert box.cli("commit").returncode == 0
    assert box.server("CyberArk-PSM-Web", "PSM2")["weight"] == 50
    assert box.server("CyberArk-PSM", "PSM1")["state"] == "drain"
    assert box.cli("rip", "online", "CyberArk-PSM", "PSM1").returncode == 0
    assert "PSM1" in {asyncio.run(rdp_lands(psm.rdp_vip, c)) for c in sources(65, 6)}
    audit = box.client.get("/audit", author=getpass.getuser())  # the command's user
    assert {"drain", "online", "commit", "modify"} <= {entry["action"] for entry in audit}


def test_restarting_the_daemon_or_committing_drops_no_connection(
    psm: Guide,
) -> None:
    box = psm.box
    engine = box.engine_pid()

    async def open_sessions() -> list[RdpSession]:
        return [await RdpSession.open(psm.rdp_vip, c) for c in sources(66, 10)]

    async def all_echo(sessions: list[RdpSession], payload: bytes) -> bool:
        return all([await s.echo(payload) for s in sessions])

    loop = asyncio.new_event_loop()
    try:
        sessions = loop.run_until_complete(open_sessions())
        box.process.send_signal(signal.SIGKILL)  # the harshest restart there is
        box.process.wait(10)
        assert loop.run_until_complete(all_echo(sessions, b"daemon gone\n"))
        box.start()
        assert box.engine_pid() == engine
        assert loop.run_until_complete(all_echo(sessions, b"daemon back\n"))
        for weight in ("50", "80", "100"):
            assert (
                box.cli("rip", "modify", "CyberArk-PSM", "PSM2", "--weight", weight).returncode == 0
            )
            assert box.cli("commit").returncode == 0
            assert loop.run_until_complete(all_echo(sessions, f"weight {weight}\n".encode()))
        for session in sessions:
            loop.run_until_complete(session.close())
    finally:
        loop.close()


def test_a_commit_the_engine_cannot_run_changes_nothing(psm: Guide, tmp_path: Path) -> None:
    box = psm.box
    import socket

    with socket.socket() as taken:
        taken.bind((f"{NET}.102", 0))
        taken.listen()
        port = taken.getsockname()[1]
        added = box.cli("vip", "add", "Clash", "--ip", f"{NET}.102", "--ports", str(port))
        assert added.returncode == 0, added.stderr
        before = box.client.get("/status")["applied"]
        refused = box.cli("commit")
        assert refused.returncode == 1
        assert refused.stderr.startswith("error: virtual_services[Clash].ports: cannot listen on")
        assert "Address already in use" in refused.stderr
    assert box.client.get("/status")["applied"] == before
    assert asyncio.run(rdp_lands(psm.rdp_vip, "127.0.67.1")) in {"PSM1", "PSM2"}


def test_backup_and_restore_through_the_command(psm: Guide, tmp_path: Path) -> None:
    box = psm.box
    backup = tmp_path / "backup.json"
    assert box.cli("config", "export", "-o", str(backup)).returncode == 0
    saved = box.client.get("/config")
    assert box.cli("vip", "remove", "CyberArk-PSM-Web").returncode == 0
    assert box.client.get("/config") != saved
    restored = box.cli("config", "import", str(backup))
    assert restored.returncode == 0, restored.stderr
    assert box.client.get("/config") == saved

    broken = tmp_path / "broken.json"
    document = json.loads(backup.read_text())
    document["config"]["virtual_services"][0]["ip"] = "192.168.94.999"
    broken.write_text(json.dumps(document))
    refused = box.cli("config", "import", str(broken))
    assert refused.returncode == 1
    assert "config.virtual_services[CyberArk-PSM].ip" in refused.stderr
    assert box.client.get("/config") == saved


BAD_EDITS = [
    (
        "post",
        "/virtual-services",
        {"label": "X", "ip": "10.0.0.300", "ports": "80"},
        422,
        "virtual_services[X].ip",
    ),
    (
        "post",
        "/virtual-services",
        {"label": "", "ip": "10.0.0.1", "ports": "80"},
        422,
        "virtual_services[2].label",
    ),
    (
        "post",
        "/virtual-services",
        {"label": "has space", "ip": "10.0.0.1", "ports": "80"},
        422,
        "virtual_services[has space].label",
    ),
    (
        "post",
        "/virtual-services",
        {"label": "X", "ip": "10.0.0.1", "ports": "0"},
        422,
        "virtual_services[X].ports",
    ),
    (
        "post",
        "/virtual-services",
        {"label": "X", "ip": "10.0.0.1", "ports": "70000"},
        422,
        "virtual_services[X].ports",
    ),
    (
        "post",
        "/virtual-services",
        {"label": "CyberArk-PSM", "ip": "10.0.0.1", "ports": "80"},
        422,
        "virtual_services[CyberArk-PSM].label",
    ),
    (
        "post",
        "/virtual-services",
        {"label": "X", "ip": "$RDP_VIP", "ports": "$RDP_PORT"},
        422,
        "virtual_services[X].ports",
    ),
    (
        "post",
        "/virtual-services",
        {"label": "X", "ip": "10.0.0.1", "ports": "80", "health_check": {"type": "https"}},
        422,
        "virtual_services[X].health_check.path",
    ),
    (
        "post",
        "/virtual-services",
        {"label": "X", "ip": "10.0.0.1", "ports": "80", "colour": 1},
        422,
        "virtual_services[X].colour",
    ),
    (
        "post",
        "/virtual-services/CyberArk-PSM/real-servers",
        {"label": "PSM1", "ip": "10.0.0.9"},
        422,
        "virtual_services[CyberArk-PSM].real_servers[PSM1].label",
    ),
    (
        "post",
        "/virtual-services/CyberArk-PSM/real-servers",
        {"label": "PSM9", "ip": "$PSM1", "port": "$RDP_PORT"},
        422,
        "virtual_services[CyberArk-PSM].real_servers[PSM9].ip",
    ),
    (
        "patch",
        "/virtual-services/CyberArk-PSM/real-servers/PSM1",
        {"weight": 300},
        422,
        "virtual_services[CyberArk-PSM].real_servers[PSM1].weight",
    ),
    (
        "patch",
        "/virtual-services/CyberArk-PSM",
        {"health_check": {"rise": 0}},
        422,
        "virtual_services[CyberArk-PSM].health_check.rise",
    ),
    (
        "patch",
        "/virtual-services/CyberArk-PSM",
        {"client_timeout": -1},
        422,
        "virtual_services[CyberArk-PSM].client_timeout",
    ),
    (
        "patch",
        "/virtual-services/CyberArk-PSM",
        {"ip": "2001:db8::1::2"},
        422,
        "virtual_services[CyberArk-PSM].ip",
    ),
    ("patch", "/virtual-services/Nope", {"ports": "80"}, 404, "label"),
    ("delete", "/virtual-services/CyberArk-PSM/real-servers/PSM9", None, 404, "label"),
    (
        "post",
        "/restore",
        {"format": "balancer-configuration", "version": 99, "config": {}},
        422,
        "version",
    ),
    ("post", "/restore", ["not", "a", "backup"], 422, ""),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "field"), BAD_EDITS)
def test_invalid_input_names_the_field_and_changes_nothing(
    unchanged: Guide, method: str, path: str, body: object, status: int, field: str
) -> None:
    box = unchanged.box
    before = box.client.get("/config"), box.client.get("/changes")["head"]
    # Addresses and ports of this run's guide setup stand in the table as placeholders.
    text = json.dumps(body).replace('"$RDP_PORT"', str(unchanged.rdp_vip[1]))
    text = text.replace("$RDP_VIP", HOSTS["rdp_vip"]).replace("$PSM1", HOSTS["PSM1"])
    with box.http() as http:
        response = http.request(
            method.upper(), path, content=text, headers={"Content-Type": "application/json"}
        )
    assert response.status_code == status, response.text
    fields = [item["field"] for item in response.json()["detail"]]
    assert field in fields, response.json()
    assert all(item["reason"] for item in response.json()["detail"])
    assert (box.client.get("/config"), box.client.get("/changes")["head"]) == before


def test_stale_writes_get_409(unchanged: Guide) -> None:
    box = unchanged.box
    head = box.client.get("/changes")["head"]
    with box.http() as http:
        response = http.patch(
            "/virtual-services/CyberArk-PSM",
            json={"retries": 2},
            headers={"If-Match": str(head - 1)},
        )
    assert response.status_code == 409
    assert response.json()["detail"][0]["field"] == "revision"
    assert box.client.get("/changes")["head"] == head


def test_command_line_errors_are_one_line_and_a_non_zero_exit(
    unchanged: Guide, tmp_path: Path
) -> None:
    box = unchanged.box
    bad = box.cli("rip", "add", "CyberArk-PSM", "PSM3", "--ip", "192.168.94.1O7")
    assert bad.returncode == 1
    assert bad.stderr == (
        "error: virtual_services[CyberArk-PSM].real_servers[PSM3].ip: "
        "'192.168.94.1O7' is not an IPv4 or IPv6 address\n"
    )
    nowhere = Appliance(tmp_path / "nothing-here", box.process, box.client).cli("status")
    assert nowhere.returncode == 1
    assert nowhere.stderr.startswith("error: cannot reach the appliance")
    assert len(nowhere.stderr.splitlines()) == 1


def test_the_api_describes_itself(unchanged: Guide) -> None:
    box = unchanged.box
    with box.http() as http:
        schema = http.get("/openapi.json").json()
    assert "/api/v1/virtual-services/{label}/real-servers" in schema["paths"]
    assert "/api/v1/commit" in schema["paths"]


@pytest.mark.skipif(os.geteuid() != 0, reason="the demo's fixed addresses need a free 3389/443")
def test_make_demo_sets_up_the_guide_and_shows_where_to_look(tmp_path: Path) -> None:
    import subprocess
    import sys

    shown = subprocess.run(
        [sys.executable, "-m", "balancer", "demo", "--check", "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    assert "CyberArk-PSM: {'PSM1': 5, 'PSM2': 5}" in shown.stdout
    assert "CyberArk-PSM-Web: {'PSM1': 5, 'PSM2': 5}" in shown.stdout
    assert "then" not in shown.stdout.split("System Overview")[0]  # nobody changed server
    assert shown.stdout.count("[ up ]") == 4
