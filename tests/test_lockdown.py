"""Management lockdown on a real appliance listening on 127.0.0.1: callers from 127.0.0.2 are
refused before any route when only 127.0.0.1/32 may manage it, a change that would shut out the
caller's own address is refused, and the Unix socket always works."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from balancer import validate
from balancer.client import api_socket
from balancer.front.lockdown import allows, lockout
from balancer.model import NodeSettings
from balancer.validate import Invalid
from tests.appliance import WEBUI_HOST, Appliance, appliance, free_port, wait_for


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Appliance]:
    with appliance(tmp_path_factory.mktemp("lockdown")) as started:
        yield started


@pytest.fixture(scope="module")
def key(running: Appliance) -> str:
    made: str = running.client.post(
        "/api-keys", {"name": "lockdown test", "owner": "loadbalancer"}
    )["key"]
    return made


@pytest.fixture
def open_again(running: Appliance) -> Iterator[None]:
    """Whatever a test locked, the next starts with every network let in."""
    yield
    running.client.put("/lockdown", {"management_allow": []})


def network(running: Appliance, source: str, key: str | None = None) -> httpx.Client:
    """The appliance's HTTPS listener as a caller at ``source`` sees it."""
    return httpx.Client(
        base_url=f"https://127.0.0.1:{running.https_port}",
        transport=httpx.HTTPTransport(local_address=source, verify=False),
        headers={"Authorization": f"Bearer {key}"} if key else {},
        timeout=30,
    )


def test_each_network_must_have_no_host_bits_and_is_named() -> None:
    with pytest.raises(Invalid) as refused:
        validate.parse_as(NodeSettings, {"management_allow": ["10.0.0.0/8", "10.1.1.1/24"]})
    (problem,) = refused.value.problems
    assert problem.field == "management_allow[1]"
    assert "'10.1.1.1/24'" in problem.reason


def test_an_ipv4_caller_on_a_dual_stack_listener_is_matched_as_ipv4() -> None:
    allowed = validate.parse_as(NodeSettings, {"management_allow": ["192.0.2.0/24"]})
    assert allows(allowed.management_allow, "::ffff:192.0.2.7")
    assert not allows(allowed.management_allow, "::ffff:198.51.100.7")
    assert not allows(allowed.management_allow, "testclient")  # not an address: refused
    assert lockout(allowed.management_allow, None) is None  # the Unix socket


@pytest.mark.usefixtures("open_again")
def test_an_address_outside_the_list_is_refused_before_any_route(
    running: Appliance, key: str
) -> None:
    with network(running, "127.0.0.2") as outside:
        assert outside.get("/lbadmin/sign-in").status_code == 200  # no list: every network
    shown = running.cli("lockdown", "set", "127.0.0.1/32")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == "management_allow: 127.0.0.1/32"
    with network(running, "127.0.0.2", key) as outside:
        for path in ("/lbadmin/sign-in", "/api/v1/status", "/metrics"):
            refused = outside.get(path)
            assert refused.status_code == 403, path
            assert refused.headers["content-type"].startswith("text/plain")
            assert (
                refused.text
                == "127.0.0.2 may not manage this appliance: it is not in management_allow\n"
            )
        # The HA peer's routes are left to the gate, which asks for the pair's certificate.
        peer = outside.get("/api/v1/peer/status")
        assert peer.status_code == 403
        assert peer.json()["detail"][0]["field"] == "certificate"
    with network(running, "127.0.0.1") as inside:
        assert inside.get("/lbadmin/sign-in").status_code == 200
    with network(running, "127.0.0.1", key) as inside:
        assert inside.get("/api/v1/status").status_code == 200
    logged = (running.data_dir / "logs" / "balancer.log").read_text()
    assert '"address": "127.0.0.2"' in logged
    assert "management refused" in logged


@pytest.mark.usefixtures("open_again")
def test_a_change_that_locks_out_the_callers_own_address_is_refused(
    running: Appliance, key: str
) -> None:
    with network(running, "127.0.0.1", key) as inside:
        refused = inside.put("/api/v1/lockdown", json={"management_allow": ["10.0.0.0/8"]})
        assert refused.status_code == 422
        (problem,) = refused.json()["detail"]
        assert problem["field"] == "management_allow"
        assert "would lock out 127.0.0.1, the address you are using now" in problem["reason"]
        assert inside.get("/api/v1/lockdown").json() == {
            "management_allow": [],
            "address": "127.0.0.1",
        }
        kept = inside.put("/api/v1/lockdown", json={"management_allow": ["127.0.0.0/30"]})
        assert kept.status_code == 200, kept.text
        assert kept.json()["management_allow"] == ["127.0.0.0/30"]
        host_bits = inside.put("/api/v1/lockdown", json={"management_allow": ["10.1.1.1/24"]})
        assert host_bits.status_code == 422
        assert host_bits.json()["detail"][0]["field"] == "management_allow[0]"


@pytest.mark.usefixtures("open_again")
def test_the_unix_socket_always_works(running: Appliance, key: str) -> None:
    locked = running.cli("lockdown", "set", "10.0.0.0/8")  # shuts every caller here out
    assert locked.returncode == 0, locked.stderr
    with network(running, "127.0.0.1", key) as inside:
        assert inside.get("/api/v1/status").status_code == 403
    assert running.cli("lockdown", "show").stdout.strip() == "management_allow: 10.0.0.0/8"
    assert running.client.get("/status")["engine"] is not None
    bad = running.cli("lockdown", "set", "10.1.1.1/24")
    assert bad.returncode == 1
    assert bad.stderr.startswith("error: management_allow[0]: '10.1.1.1/24'"), bad.stderr
    cleared = running.cli("lockdown", "clear")
    assert cleared.returncode == 0, cleared.stderr
    assert "none listed" in cleared.stdout
    with network(running, "127.0.0.1", key) as inside:
        assert inside.get("/api/v1/status").status_code == 200


@pytest.mark.usefixtures("open_again")
def test_the_plain_http_listener_is_locked_down_too(running: Appliance) -> None:
    """Plain HTTP turned on (Local Configuration, then Restart Services, both over the Unix
    socket), then refused from 127.0.0.2 as HTTPS is."""
    http_port = free_port([WEBUI_HOST])
    with httpx.Client(
        transport=httpx.HTTPTransport(uds=str(api_socket(running.data_dir))),
        base_url="http://balancer",
        headers={"X-Balancer-User": "tester"},
        timeout=30,
    ) as local:
        sockets = {"listen_address": WEBUI_HOST, "https_port": str(running.https_port)}
        saved = local.post(
            "/lbadmin/local-configuration/sockets", data={**sockets, "http_port": str(http_port)}
        )
        assert saved.status_code == 303, saved.text
        restart = {"action": "management", "confirm": "yes"}
        assert local.post("/lbadmin/maintenance/restart", data=restart).is_success

    def plain(source: str) -> int:
        transport = httpx.HTTPTransport(local_address=source)
        with httpx.Client(transport=transport, timeout=5) as client:
            return client.get(f"http://{WEBUI_HOST}:{http_port}/lbadmin/sign-in").status_code

    wait_for("the plain HTTP listener", lambda: plain("127.0.0.1") == 200)
    assert running.cli("lockdown", "set", "127.0.0.1/32").returncode == 0
    assert plain("127.0.0.2") == 403
    assert plain("127.0.0.1") == 200
