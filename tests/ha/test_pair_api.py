"""Pairing and Break Clustered Pair through the API, between real `balancer serve` nodes on
loopback addresses of their own: the handshake over the peer's pinned HTTPS port, each refusal
leaving both nodes as they were, the pair made on both, and both standalone after a break.

keepalived and the link are not these tests' (tests/ha/test_pair_failover.py has them in
namespaces): each node runs with ``Cluster.form`` and ``Cluster.dissolve`` recording what they
were asked, in ``cluster.jsonl`` in its data directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pytest

from balancer import users
from balancer.client import ApiError, Client, api_socket, fingerprint
from balancer.ha import trust
from balancer.ha.pairing import Problem, Request
from balancer.pair import pairing
from balancer.store import Store
from tests.appliance import START_TIMEOUT, free_port, wait_for

PRIMARY, SECONDARY, BUSY, OLD = "127.97.0.1", "127.97.0.2", "127.97.0.3", "127.97.0.4"
PRIMARY_PASSWORD = "the Primary's appliance password"
PEER_PASSWORD = "the peer's appliance password"
# `balancer serve` with keepalived left out (a Heartbeat that says Active on the Primary and
# Passive on the Secondary and moves nothing) and the Cluster's form and dissolve recorded as
# they run, and, when given, another Balancer version.
BOOT = """
import json, sys
from balancer.ha.role import State, Status
from balancer.pair import cluster, pairing

version = sys.argv.pop(1)
if version != "-":
    pairing.version = lambda: version

class Heartbeat:
    def __init__(self, data_dir, pair, publish, audit):
        self.state = State.ACTIVE if pair.role == "primary" else State.PASSIVE
    def status(self):
        return Status(self.state, None, "keepalived is left out of these tests", 0.0)
    async def start(self, vips): pass
    async def update(self, vips): pass
    async def stop(self): pass
    async def close(self): pass

def record(self, entry):
    with (self.data_dir / "cluster.jsonl").open("a") as out:
        out.write(json.dumps(entry) + "\\n")

form, dissolve, init = cluster.Cluster.form, cluster.Cluster.dissolve, cluster.Cluster.__init__

async def forming(self, pair):
    record(self, {"form": pair.model_dump(mode="json")})
    await form(self, pair)

async def dissolving(self, *, keep_floating_ips):
    record(self, {"dissolve": keep_floating_ips})
    await dissolve(self, keep_floating_ips=keep_floating_ips)

cluster.Cluster.form, cluster.Cluster.dissolve = forming, dissolving
cluster.Cluster.__init__ = lambda self, *args, **kw: init(self, *args, **kw, heartbeat=Heartbeat)
from balancer.cli import main
sys.argv = ["balancer", *sys.argv[1:]]
main()
"""


@dataclass
class Node:
    address: str
    data_dir: Path
    port: int
    process: subprocess.Popen[bytes]
    client: Client

    @property
    def fingerprint(self) -> str:
        pem = ssl.get_server_certificate((self.address, self.port), timeout=10)
        return fingerprint(ssl.PEM_cert_to_DER_cert(pem))

    def pair_with(self, peer: Node, **fields: Any) -> dict[str, Any]:
        body = {
            "local_address": self.address,
            "peer_address": peer.address,
            "peer_port": peer.port,
            "password": PEER_PASSWORD,
            "fingerprint": peer.fingerprint,
            **fields,
        }
        found: dict[str, Any] = self.client.post("/ha/pair", body)
        return found

    def state(self) -> dict[str, Any]:
        """What pairing may change on a node."""
        pair_dir = trust.directory(self.data_dir)
        return {
            "ha": self.client.get("/ha")["pair"],
            "changes": self.client.get("/changes"),
            "config": self.client.get("/config"),
            "users": self.client.get("/users"),
            "pair files": sorted(p.name for p in pair_dir.iterdir()) if pair_dir.exists() else [],
            "cluster": self.cluster(),
        }

    def cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """The `balancer` command on this node."""
        env = {**os.environ, "BALANCER_DIR": str(self.data_dir)}
        return subprocess.run(
            [sys.executable, "-m", "balancer", *args],
            input=stdin,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def cluster(self) -> list[dict[str, Any]]:
        recorded = self.data_dir / "cluster.jsonl"
        if not recorded.exists():
            return []
        return [json.loads(line) for line in recorded.read_text().splitlines()]

    def audit(self) -> str:
        with Store(self.data_dir / "balancer.db") as store:
            return json.dumps([asdict(entry) for entry in store.audit_log(1000)], default=str)


@contextlib.contextmanager
def node(root: Path, address: str, password: str, version: str = "-") -> Iterator[Node]:
    data_dir = root / address
    data_dir.mkdir(parents=True)
    with Store(data_dir / "balancer.db") as store:
        users.add_user(store, "loadbalancer", password, author="tester")
    port = free_port([address])
    with (root / f"{address}.err").open("ab") as errors:
        process = subprocess.Popen(
            [
                sys.executable, "-c", BOOT, version, "serve", "--dir", str(data_dir),
                "--listen", address, "--https-port", str(port),
            ],
            stdout=subprocess.DEVNULL,
            stderr=errors,
        )  # fmt: skip
    found = Node(address, data_dir, port, process, Client(api_socket(data_dir), "tester", 30))
    try:
        wait_for(f"{address}'s API", lambda: _listening(found), START_TIMEOUT)
        yield found
    finally:
        with contextlib.suppress(ApiError):
            found.client.post("/shutdown", engine="true")
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        with contextlib.suppress(OSError, ValueError):
            os.kill(int((data_dir / "engine.pid").read_text()), signal.SIGKILL)


def _listening(found: Node) -> bool:
    if found.process.poll() is not None:
        raise AssertionError(f"balancer serve exited with {found.process.returncode}")
    return bool(found.client.get("/ha"))


def add_service(box: Node, label: str, address: str) -> None:
    server = {"label": "one", "ip": address, "port": 3389}
    box.client.post(
        "/virtual-services",
        {
            "label": label,
            "ip": address,
            "ports": str(free_port([address])),
            "real_servers": [server],
        },
    )
    box.client.post("/commit")


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Node]]:
    """A configured Primary, an empty peer, a peer with a service of its own and a peer that
    runs another Balancer version; none is paired by the tests that use them."""
    root = tmp_path_factory.mktemp("pairing")
    with (
        node(root, PRIMARY, PRIMARY_PASSWORD) as primary,
        node(root, SECONDARY, PEER_PASSWORD) as secondary,
        node(root, BUSY, PEER_PASSWORD) as busy,
        node(root, OLD, PEER_PASSWORD, version="0.0.9") as old,
    ):
        add_service(primary, "CyberArk-PSM", PRIMARY)
        add_service(busy, "Its-Own", BUSY)
        yield {"primary": primary, "secondary": secondary, "busy": busy, "old": old}


def refused(primary: Node, peer: Node, **fields: Any) -> ApiError:
    before = (primary.state(), peer.state())
    with pytest.raises(ApiError) as raised:
        primary.pair_with(peer, **fields)
    assert (primary.state(), peer.state()) == before
    return raised.value


def test_a_wrong_password_is_refused_and_changes_nothing(nodes: dict[str, Node]) -> None:
    error = refused(nodes["primary"], nodes["secondary"], password="not the password")
    assert error.status == 422
    assert str(error) == (
        f"password: wrong password: the peer at {SECONDARY}:{nodes['secondary'].port} refused "
        "the password of its loadbalancer user: nothing was changed"
    )
    # Refused on the peer too, as a sign-in is: audited, and never the password itself.
    for box in (nodes["primary"], nodes["secondary"]):
        assert "not the password" not in box.audit()
    assert "ha_join_refused" in nodes["secondary"].audit()
    assert "ha_pair_refused" in nodes["primary"].audit()


def test_a_wrong_fingerprint_is_refused_before_the_password_is_sent(
    nodes: dict[str, Node],
) -> None:
    other = nodes["busy"].fingerprint
    error = refused(nodes["primary"], nodes["secondary"], fingerprint=other)
    assert error.status == 422
    assert str(error) == (
        f"fingerprint: fingerprint mismatch: the peer at {SECONDARY}:{nodes['secondary'].port} "
        f"showed a certificate with SHA-256 fingerprint {nodes['secondary'].fingerprint}, not "
        f"the one confirmed ({other}): refused, its password was not sent"
    )


def test_an_unreachable_peer_is_refused(nodes: dict[str, Node]) -> None:
    closed = free_port([SECONDARY])
    error = refused(nodes["primary"], nodes["secondary"], peer_port=closed)
    assert error.status == 422
    assert str(error) == (
        f"peer_address: peer unreachable: cannot reach the peer at {SECONDARY}:{closed} "
        "(connection refused): is Balancer serving there, and is the port open between the nodes?"
    )


def test_a_peer_of_another_version_is_refused(nodes: dict[str, Node]) -> None:
    error = refused(nodes["primary"], nodes["old"])
    assert str(error) == (
        f"peer_address: version differs: the peer at {OLD}:{nodes['old'].port} runs Balancer "
        "0.0.9 and this node 0.1.0: both nodes of a pair run the same version; update one and "
        "pair again"
    )


def test_a_peer_with_services_of_its_own_is_asked_about_then_kept(
    nodes: dict[str, Node],
) -> None:
    where = f"{BUSY}:{nodes['busy'].port}"
    asked = refused(nodes["primary"], nodes["busy"])
    assert asked.status == 409
    assert str(asked) == (
        f"replace: the peer at {where} has 1 service of its own (Its-Own): pairing replaces them "
        "with this node's configuration. Replace them?"
    )
    kept = refused(nodes["primary"], nodes["busy"], replace=False)
    assert kept.status == 422
    assert str(kept) == (
        f"replace: peer not empty: the peer at {where} has 1 service of its own (Its-Own) and "
        "they were kept: nothing was changed"
    )


def test_a_peer_that_cannot_run_the_configuration_is_left_standalone_as_it_was(
    nodes: dict[str, Node],
) -> None:
    # On one machine the peer cannot listen where the Primary's engine does: its engine refuses
    # the Primary's revision, after every check passed.
    primary, peer = nodes["primary"], nodes["secondary"]
    before = {box.address: _own(box) for box in (primary, peer)}
    with pytest.raises(ApiError) as raised:
        primary.pair_with(peer)
    assert raised.value.status == 502
    assert str(raised.value).startswith(
        "peer_address: Making the peer the Secondary: it answered /api/v1/ha/join/accept with "
        "HTTP 422 (virtual_services[CyberArk-PSM].ports: cannot listen on "
    )
    assert {box.address: _own(box) for box in (primary, peer)} == before
    assert "ha_pair_failed" in primary.audit()


def _own(box: Node) -> dict[str, Any]:
    """A node's own, which a pairing that failed leaves as it was: its history may have grown."""
    state = box.state()
    return {**state, "changes": {**state["changes"], "head": None}}


def test_the_cli_prints_a_refusal_in_one_line(nodes: dict[str, Node]) -> None:
    primary, peer = nodes["primary"], nodes["secondary"]
    done = primary.cli(
        "ha", "pair", "--local", PRIMARY, "--peer", SECONDARY, "--port", str(peer.port),
        "--fingerprint", peer.fingerprint, "--password-stdin", stdin="wrong password\n",
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"error: password: wrong password: the peer at {SECONDARY}:{peer.port} refused the "
        "password of its loadbalancer user: nothing was changed"
    ]


def test_pairing_makes_the_pair_on_both_nodes_and_a_break_leaves_both_standalone(
    tmp_path: Path,
) -> None:
    with (
        node(tmp_path, PRIMARY, PRIMARY_PASSWORD) as primary,
        node(tmp_path, BUSY, PEER_PASSWORD) as secondary,
    ):
        # Both nodes listen on one machine here, so the configuration the Secondary is to run
        # must leave free what the Primary's engine listens on: the Primary's runs no service.
        add_service(primary, "CyberArk-PSM", PRIMARY)
        primary.client.delete("/virtual-services/CyberArk-PSM")
        primary.client.post("/commit")
        primary.client.post("/users", {"name": "alice", "password": "the first user's password"})
        add_service(secondary, "Its-Own", BUSY)
        add_service(secondary, "Its-Other", BUSY)
        config = primary.client.get("/config")

        answer = primary.pair_with(secondary, replace=True)

        assert answer["paired"] is True
        assert answer["message"] == f"Paired: Primary {PRIMARY}, Secondary {BUSY}"
        texts = [step["text"] for step in answer["steps"]]
        assert texts[0] == "Attempting to pair…"
        assert "The peer's 2 services will be replaced by this node's" in texts
        assert {step["progress"] for step in answer["steps"]} == {"done"}
        # Each node keeps its part: the Primary the authority's key, the Secondary not.
        assert primary.state()["pair files"] == ["ca-key.pem", "ca.pem", "node-key.pem", "node.pem"]
        assert secondary.state()["pair files"] == ["ca.pem", "node-key.pem", "node.pem"]
        formed = {
            "role": "primary",
            "local_address": PRIMARY,
            "peer_address": BUSY,
            "peer_port": secondary.port,
        }
        assert _pair(primary) == formed
        assert _pair(secondary) == {
            "role": "secondary",
            "local_address": BUSY,
            "peer_address": PRIMARY,
            "peer_port": primary.port,
        }
        assert primary.client.get("/ha")["pair"]["this"]["role"] == "primary"
        assert secondary.client.get("/ha")["pair"]["this"]["role"] == "secondary"
        # From here on the nodes hear each other over the pair's mutual TLS.
        for box, other in ((primary, secondary), (secondary, primary)):
            wait_for(f"{box.address} to hear {other.address}", lambda b=box: _heard(b))
        # Both had a revision 2 of their own: the Primary ran its configuration again under a
        # number past the peer's, and the Secondary runs it under that number, its own
        # services replaced. It has the Primary's users too.
        assert primary.client.get("/changes")["applied"] == 3
        assert secondary.client.get("/changes")["applied"] == 3
        assert primary.client.get("/config") == secondary.client.get("/config") == config
        names = [user["name"] for user in secondary.client.get("/users")]
        assert (
            names
            == [user["name"] for user in primary.client.get("/users")]
            == [
                "alice",
                "loadbalancer",
            ]
        )
        with Store(secondary.data_dir / "balancer.db") as store:
            assert users.verify(store, "loadbalancer", PRIMARY_PASSWORD)
        for box in (primary, secondary):
            assert "ha_paired" in box.audit()
            assert PRIMARY_PASSWORD not in box.audit()
            assert PEER_PASSWORD not in box.audit()

        status = primary.cli("ha", "status")
        assert status.returncode == 0, status.stderr
        lines = status.stdout.splitlines()
        assert lines[0].split() == [
            "this", "node", PRIMARY, "Primary", "Active", "revision", "3", "sync", "owner;",
            "engine", "builtin",
        ]  # fmt: skip
        assert lines[1].split()[:7] == [
            "peer",
            BUSY,
            "Secondary",
            "Passive",
            "revision",
            "3",
            "sync",
        ]
        assert lines[2].startswith("link: the peer last answered ")

        broken = primary.cli("ha", "break")
        assert broken.returncode == 0, broken.stderr
        # The Secondary was told over the pair's link, and left the pair too; the Primary, Active,
        # keeps the floating IPs.
        assert broken.stdout.splitlines() == [
            f"{PRIMARY} (Primary) keeps its configuration and users and the floating IPs; it gives "
            "up the pair's certificates and its peer, and stands alone",
            f"{BUSY} (Secondary) keeps its configuration and users; it gives up the floating IPs, "
            "the pair's certificates and its peer, and stands alone",
        ]
        for box in (primary, secondary):
            state = box.state()
            assert state["ha"] is None
            assert state["pair files"] == []
            assert state["config"] == primary.client.get("/config")
            assert "ha_pair_broken" in box.audit()
        # Neither forgot anything but the pair, and one node alone kept the floating IPs.
        assert [u["name"] for u in secondary.client.get("/users")] == ["alice", "loadbalancer"]
        kept = [
            [e["dissolve"] for e in box.cluster() if "dissolve" in e]
            for box in (primary, secondary)
        ]
        assert kept == [[True], [False]]
        with pytest.raises(ApiError, match="stands alone"):
            primary.client.delete("/ha/pair")


def _heard(box: Node) -> bool:
    view = box.client.get("/ha")["pair"]
    return view["peer"] is not None and view["link"] is not None


def _pair(box: Node) -> dict[str, Any]:
    formed = [entry["form"] for entry in box.cluster() if "form" in entry]
    assert len(formed) == 1
    settings = {k: formed[0][k] for k in ("role", "local_address", "peer_address", "peer_port")}
    return settings


def test_pairing_is_refused_from_an_address_this_node_does_not_have(
    nodes: dict[str, Node],
) -> None:
    primary = nodes["primary"]
    before = primary.state()
    with pytest.raises(ApiError) as raised:
        primary.pair_with(nodes["secondary"], local_address="198.18.255.254")
    assert raised.value.status == 409
    assert str(raised.value) == (
        "local_address: 198.18.255.254 is not an address of this node (cannot assign requested "
        "address)"
    )
    assert primary.state() == before


def test_one_pairing_at_a_time(tmp_path: Path) -> None:
    @dataclass
    class Alone:
        store: Store
        data_dir: Path
        pair: None = None

    async def twice() -> str:
        with Store(tmp_path / "balancer.db") as store:
            node = Alone(store, tmp_path)
            closed = free_port([SECONDARY])
            request = Request(PRIMARY, SECONDARY, ":".join(["AB"] * 32), "0.1.0", closed)
            first = asyncio.create_task(
                pairing.add_node(node, request, "", None, lambda _: None, author="tester")
            )
            await asyncio.sleep(0)  # the first is on its way to the peer
            with pytest.raises(pairing.PairingError) as second:
                await pairing.add_node(node, request, "", None, lambda _: None, author="tester")
            outcome = await first
            assert outcome.problem is Problem.UNREACHABLE
            return str(second.value)

    assert asyncio.run(twice()) == (
        "peer_address: this node is pairing already: wait for it to end"
    )
