"""The HA pair in the WebUI: every page's status bar (role, state, link), the Secondary's
read-only pages, System Overview's two nodes, and Cluster Configuration > High-Availability
Configuration (the guide's 14.1.2 form, its steps, the pair and Break Clustered Pair).

The pair is a Cluster whose view the test sets (``Shown``) and, for the form, a pairing that
the test drives (``Pairing``, standing in for ``balancer.pair.pairing``): the pages are what is
tested here, tests/ha/ pairs real nodes. In process first (quick); then in Debian's chromium,
by keyboard, against the same application served over HTTPS on loopback.
"""

from __future__ import annotations

import asyncio
import dataclasses
import html
import json
import re
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from ipaddress import IPv4Address, ip_address
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from balancer import certificates, users
from balancer.app import create_app
from balancer.certificates import parse_fingerprint
from balancer.controller import Controller
from balancer.front.gate import local
from balancer.front.listeners import listener, network_socket
from balancer.ha import pairing
from balancer.ha.pairing import Answers, Confirm, Port, Refuse
from balancer.ha.split_brain import Alarm
from balancer.model import Pair
from balancer.pair.cluster import Cluster, PairError
from balancer.pair.pairing import Node, Outcome
from balancer.pair.status import NodeView, PairView
from balancer.store import Store
from balancer.validate import parse_as
from balancer.web import high_availability
from tests.appliance import wait_for
from tests.webapp import PASSWORD, FakeEngine, csrf_of

PRIMARY = NodeView("198.18.0.1", "primary", "active", 7, "haproxy", None, "owner")
SECONDARY = NodeView("198.18.0.2", "secondary", "passive", 5, "builtin", None, "behind by 2")
VIP = {"label": "CyberArk-PSM", "ip": "192.168.94.100", "ports": "3389"}


class Shown(Cluster):
    """A Cluster whose view the test sets; its Pair is the store's, as the real one's. Its
    HA settings are kept as the real one keeps them once both nodes took them, or refused with
    ``refusal``."""

    shown: PairView | None = None
    refusal: str | None = None

    def view(self) -> PairView | None:
        return self.shown

    async def configure(
        self,
        advert_interval: float,
        preempt: bool,
        *,
        author: str,
        replication_port: int | None = None,
    ) -> str:
        pair = self.pair
        assert pair is not None
        if self.refusal is not None:
            raise PairError(self.refusal)
        settings = {
            "advert_interval": advert_interval,
            "preempt": preempt,
            "replication_port": replication_port or pair.replication_port,
        }
        wanted = parse_as(Pair, {**pair.model_dump(), **settings})
        node = self.store.node_settings()
        self.store.save_node_settings(node.model_copy(update={"pair": wanted}), author=author)
        said = f"advert interval {advert_interval:g} s, preemption {'on' if preempt else 'off'}"
        return f"{said}, replication port {wanted.replication_port}"


@dataclass
class Peer:
    """The peer as pairing finds it, standing in for ``balancer.pair.pairing``'s add_node and
    break_pair: each Add new node is held after its first step until ``go`` is set, then
    answers as a peer with this ``password`` and ``services`` would."""

    password: str = "the peer's password"
    services: tuple[str, ...] = ()
    shows: str | None = None  # the certificate it presents, if not the one confirmed
    asked: list[tuple[pairing.Request, str, bool | None, str]] = field(default_factory=list)
    go: threading.Event = field(default_factory=threading.Event)
    breaks: list[str] = field(default_factory=list)

    async def add_node(
        self,
        node: Node,
        request: pairing.Request,
        password: str,
        replace: bool | None,
        progress: Any,
        *,
        author: str,
    ) -> Outcome:
        self.asked.append((request, password, replace, author))
        answers = Answers(fingerprint=self.shows or parse_fingerprint(request.fingerprint))
        progress(pairing.steps(request, answers))
        assert await asyncio.to_thread(self.go.wait, 60)
        for answered in (
            {"password": password == self.password},
            {
                "version": request.version,
                "ports": (Port(request.port, "management and sync, each way"),),
                "services": self.services,
                "replace": replace,
            },
        ):
            decision = pairing.decide(request, answers)
            if isinstance(decision, Refuse):
                return Outcome(pairing.steps(request, answers), problem=decision.problem)
            answers = dataclasses.replace(answers, **answered)
        decision = pairing.decide(request, answers)
        if isinstance(decision, Confirm):
            return Outcome(pairing.steps(request, answers), question=decision.question)
        if isinstance(decision, Refuse):
            return Outcome(pairing.steps(request, answers), problem=decision.problem)
        pair = Pair(
            role="primary",
            local_address=request.local,  # type: ignore[arg-type]
            peer_address=request.peer,  # type: ignore[arg-type]
            peer_port=request.port,
        )
        node.store.save_node_settings(
            node.store.node_settings().model_copy(update={"pair": pair}), author=author
        )
        return Outcome(pairing.steps(request, answers, pairing.STAGES), paired=True)

    async def break_pair(self, node: Node, *, author: str) -> tuple[pairing.Leave, pairing.Leave]:
        pair = node.pair
        assert pair is not None
        self.breaks.append(author)
        node.store.save_node_settings(
            node.store.node_settings().model_copy(update={"pair": None}), author=author
        )
        role = pairing.Role
        return pairing.break_pair(
            pairing.Node(str(pair.local_address), role.PRIMARY, pairing.State.ACTIVE),
            pairing.Node(str(pair.peer_address), role.SECONDARY, pairing.State.PASSIVE),
        )


@dataclass
class PairWeb:
    store: Store
    cluster: Shown
    client: TestClient  # over HTTPS, signed in, as a browser on another machine
    local: TestClient  # as the `balancer` command on the Unix socket
    url: str  # the same application served over HTTPS on loopback, for a browser
    port: int  # ...its port: the "peer" whose certificate the pairing form shows
    fingerprint: str  # ...and that certificate's
    peer: Peer

    def paired(self, role: str, view: PairView | None) -> None:
        """This node made ``role`` of a pair of 198.18.0.1 and .2, seen as ``view``."""
        this, peer = (
            ("198.18.0.1", "198.18.0.2") if role == "primary" else ("198.18.0.2", "198.18.0.1")
        )
        pair = Pair(role=role, local_address=this, peer_address=peer)  # type: ignore[arg-type]
        node = self.store.node_settings().model_copy(update={"pair": pair})
        self.store.save_node_settings(node, author="test")
        self.cluster.shown = view

    def csrf(self) -> str:
        return csrf_of(self.client.get("/lbadmin/").text)


# This node's own addresses, as `ip` would list them.
ADDRESSES = ("198.18.0.1", "2001:db8::1")


@contextmanager
def serving(app: Any, certificate: Path) -> Iterator[int]:
    """``app`` over HTTPS on a loopback port (a thread of its own) until the end of the block."""
    sock = network_socket(IPv4Address("127.0.0.1"), 0)
    server = listener(app, certificate)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]})
    thread.start()
    try:
        wait_for("the WebUI to listen", lambda: server.started)
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


@contextmanager
def pair_web(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PairWeb]:
    peer = Peer()
    monkeypatch.setattr(high_availability, "add_node", peer.add_node)
    monkeypatch.setattr(high_availability, "break_pair", peer.break_pair)

    async def addresses() -> tuple[str, ...]:
        return ADDRESSES

    monkeypatch.setattr(high_availability, "node_addresses", addresses)
    certificate = certificates.certificate(tmp_path / "webui.pem", "balancer.test")
    shown = certificates.describe(certificate.read_bytes()).fingerprint
    with Store(tmp_path / "balancer.db") as store:
        users.add_user(store, "loadbalancer", PASSWORD, author="test")
        controller = Controller(store, FakeEngine())
        cluster = Shown(store, controller, tmp_path)
        app = create_app(store, controller, cluster, tmp_path, lambda restart: None)
        with (
            serving(app, certificate) as port,
            TestClient(app, base_url="https://balancer.test") as client,
            TestClient(local(app), base_url="http://balancer") as local_client,
        ):
            url = f"https://127.0.0.1:{port}/lbadmin/"
            web = PairWeb(store, cluster, client, local_client, url, port, shown, peer)
            token = csrf_of(client.get("/lbadmin/sign-in").text)
            signed = client.post(
                "/lbadmin/sign-in",
                data={"username": "loadbalancer", "password": PASSWORD, "csrf_token": token},
                follow_redirects=False,
            )
            assert signed.status_code == 303, signed.text
            yield web


@pytest.fixture
def web(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PairWeb]:
    with pair_web(tmp_path, monkeypatch) as running:
        yield running


def text(page: str) -> str:
    """A page's words, without its markup, as a reader sees them."""
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))).strip()


def part(page: str, start: str, end: str) -> str:
    at = page.index(start)
    return page[at : page.index(end, at)]


def status_bar(page: str) -> str:
    """The status bar's words: role, state and link."""
    return text(part(page, '<div id="pair-status"', "</dl>"))


# --- the status bar ---------------------------------------------------------------------------


def test_a_standalone_node_shows_no_status_bar(web: PairWeb) -> None:
    page = web.client.get("/lbadmin/virtual-services").text
    assert "<dt>Role</dt>" not in page
    beat = web.client.get("/lbadmin/heartbeat", headers={"X-Balancer-Poll": "1", "HX-Request": "1"})
    assert beat.status_code == 204


def test_every_page_shows_this_nodes_role_state_and_link(web: PairWeb) -> None:
    web.paired("primary", PairView(this=PRIMARY, peer=SECONDARY, link=0.43))
    for path in ("/lbadmin/", "/lbadmin/virtual-services", "/lbadmin/logs", "/lbadmin/nowhere"):
        page = web.client.get(path).text
        assert status_bar(page) == "Role Primary State Active Link 0.4 s ago", path
        assert 'class="state-active"' in page


@pytest.mark.parametrize(
    ("state", "link", "shown"),
    [
        ("passive", 0.2, "State Passive Link 0.2 s ago"),
        ("fault", 12.4, "State Fault Link 12 s ago"),
        ("unknown", None, "State Unknown Link never heard"),
        ("backup", 1.0, "State Unknown Link 1.0 s ago"),  # not keepalived's word for us
    ],
)
def test_the_status_bar_says_each_state_and_link(
    web: PairWeb, state: str, link: float | None, shown: str
) -> None:
    this = NodeView("198.18.0.2", "secondary", state, 5, "builtin", None, "in sync")
    web.paired("secondary", PairView(this=this, peer=None, link=link))
    assert status_bar(web.client.get("/lbadmin/logs").text) == f"Role Secondary {shown}"
    lost = link is None or link > 2.5
    assert ('class="link-lost"' in web.client.get("/lbadmin/logs").text) is lost


def test_a_split_brain_shows_on_every_page_in_red_with_its_evidence(web: PairWeb) -> None:
    evidence = ("198.18.1.100 answered from 02:00:00:00:00:02 as well as this node",)
    alarm = Alarm(raised=True, since=1_781_857_801.0, evidence=evidence)
    web.paired("primary", PairView(this=PRIMARY, peer=None, link=9.0, split_brain=alarm))
    for path in ("/lbadmin/", "/lbadmin/logs"):
        page = web.client.get(path).text
        assert status_bar(page) == (
            "Role Primary State Active Link 9.0 s ago Split brain both nodes hold the floating "
            f"IPs since 2026-06-19 08:30:01 UTC: {evidence[0]}"
        ), path
        assert '<div class="split-brain">' in page
    web.cluster.shown = PairView(this=PRIMARY, peer=None, link=0.4, split_brain=Alarm())
    assert "Split brain" not in web.client.get("/lbadmin/logs").text


def test_the_heartbeat_and_the_overviews_refresh_bring_the_status_bar_again(web: PairWeb) -> None:
    web.paired("primary", PairView(this=PRIMARY, peer=SECONDARY, link=0.4))
    poll = {"X-Balancer-Poll": "1", "HX-Request": "1"}
    web.cluster.shown = PairView(
        this=NodeView("198.18.0.1", "primary", "fault", 7, "haproxy", "down", "owner"),
        peer=SECONDARY,
        link=3.0,
    )
    beat = web.client.get("/lbadmin/heartbeat", headers=poll)
    assert beat.status_code == 200
    assert 'id="pair-status" class="pair-status" hx-swap-oob="true"' in beat.text
    assert text(beat.text) == "Role Primary State Fault Link 3.0 s ago"
    live = web.client.get("/lbadmin/overview/live", headers=poll).text
    assert live.count('hx-swap-oob="true"') == 1
    assert status_bar(live) == "Role Primary State Fault Link 3.0 s ago"
    # The whole page has the bar once, in its header, not also where the refresh goes.
    assert web.client.get("/lbadmin/").text.count('id="pair-status"') == 1


# --- the Secondary's read-only pages ------------------------------------------------------------

SHARED_PAGES = (
    "/lbadmin/virtual-services",
    "/lbadmin/virtual-services/add",
    "/lbadmin/virtual-services/CyberArk-PSM/modify",
    "/lbadmin/virtual-services/CyberArk-PSM/delete",
    "/lbadmin/real-servers",
    "/lbadmin/real-servers/CyberArk-PSM/add",
    "/lbadmin/wizards/layer-7",
    "/lbadmin/wizards/psm",
    "/lbadmin/maintenance/backup",
    "/lbadmin/maintenance/passwords",
)
NODE_PAGES = (
    "/lbadmin/",
    "/lbadmin/local-configuration",
    "/lbadmin/maintenance/restart",
    "/lbadmin/view-configuration",
    "/lbadmin/logs",
)
READ_ONLY = "This node is the Secondary of an HA pair: the cluster configuration is read-only here."


def test_the_secondarys_configuration_pages_are_read_only_and_point_to_the_primary(
    web: PairWeb,
) -> None:
    assert web.local.post("/api/v1/virtual-services", json=VIP).is_success
    web.paired("secondary", PairView(this=SECONDARY, peer=PRIMARY, link=0.3))
    for path in SHARED_PAGES:
        page = web.client.get(path)
        assert page.status_code == 200, path
        banner = text(part(page.text, 'class="banner warn read-only"', "</div>"))
        primary = f"https://198.18.0.1:9443{path}"
        assert banner.endswith(f"{READ_ONLY} Make changes on the Primary: {primary}"), path
        assert f'<a href="{primary}">' in page.text
        # Every form of the page is in the one disabled fieldset.
        content = page.text[page.text.index('<fieldset class="read-only" disabled>') :]
        assert content.count("<form") == page.text.split("<main>")[1].count("<form"), path
    for path in NODE_PAGES:
        page = web.client.get(path).text
        assert READ_ONLY not in text(page), path
        assert '<fieldset class="read-only" disabled>' not in page, path


def test_the_secondarys_commit_box_points_to_the_primary(web: PairWeb) -> None:
    assert web.local.post("/api/v1/virtual-services", json=VIP).is_success
    web.paired("secondary", PairView(this=SECONDARY, peer=PRIMARY, link=0.3))
    box = part(web.client.get("/lbadmin/logs").text, 'id="commit-box"', "</section>")
    assert "<form" not in box
    assert (
        "it runs what the Primary commits. Commit on the Primary: https://198.18.0.1:9443/"
        in text(box)
    )


def test_the_primary_and_a_standalone_node_edit_as_before(web: PairWeb) -> None:
    assert web.local.post("/api/v1/virtual-services", json=VIP).is_success
    for role in (None, "primary"):
        if role:
            web.paired(role, PairView(this=PRIMARY, peer=SECONDARY, link=0.3))
        page = web.client.get("/lbadmin/virtual-services/add").text
        assert READ_ONLY not in text(page)
        assert '<fieldset class="read-only" disabled>' not in page
        assert '<button type="submit" class="primary">Commit</button>' in page


# --- System Overview's two nodes ---------------------------------------------------------------


def rows(page: str) -> list[str]:
    table = part(page, 'id="pair-nodes-title"', "</table>")
    return [text(row) for row in re.findall(r"<tr data-node=.*?</tr>", table, re.S)]


def test_the_overview_shows_both_nodes(web: PairWeb) -> None:
    assert "HA Clustered Pair" not in web.client.get("/lbadmin/").text  # standalone
    peer = NodeView(
        "198.18.0.2", "secondary", "passive", 5, "builtin", "port 3389 in use", "failed: timed out"
    )
    web.paired("primary", PairView(this=PRIMARY, peer=peer, link=0.4))
    assert rows(web.client.get("/lbadmin/").text) == [
        "198.18.0.1 (this node) Primary Active 7 owns the configuration haproxy",
        "198.18.0.2 Secondary Passive 5 failed: timed out builtin port 3389 in use",
    ]
    # The refresh brings the same, in place.
    live = web.client.get("/lbadmin/overview/live", headers={"HX-Request": "1"}).text
    assert rows(live)[1].startswith("198.18.0.2 Secondary Passive 5 failed: timed out")
    assert "is not running" not in live
    web.cluster.fault = "the pair's files: node.pem is missing"
    live = web.client.get("/lbadmin/overview/live", headers={"HX-Request": "1"}).text
    said = "This node's part in the pair is not running: the pair's files: node.pem is missing."
    assert said in text(live)


def test_a_peer_not_heard_yet_is_shown_by_its_address(web: PairWeb) -> None:
    this = NodeView("198.18.0.2", "secondary", "unknown", None, "builtin", None, "unknown")
    web.paired("secondary", PairView(this=this, peer=None, link=None))
    assert rows(web.client.get("/lbadmin/").text) == [
        "198.18.0.2 (this node) Secondary Unknown none yet unknown builtin",
        "198.18.0.1 Primary not heard yet \N{EM DASH} \N{EM DASH} \N{EM DASH}",
    ]


# --- Cluster Configuration > High-Availability Configuration -----------------------------------

HA = "/lbadmin/high-availability"
# `ip -json address show`, recorded: loopback, a node address, a floating one, link-local.
IP_JSON = json.dumps(
    [
        {"ifname": "lo", "addr_info": [{"local": "127.0.0.1"}, {"local": "::1"}]},
        {
            "ifname": "eth0",
            "addr_info": [
                {"local": "10.11.40.55"},
                {"local": "10.11.40.60"},
                {"local": "fe80::1"},
                {"local": "2001:db8::55"},
            ],
        },
        {"ifname": "eth1", "addr_info": [{"local": "10.11.40.55"}]},
        {"ifname": "dummy0"},
    ]
)


def test_this_nodes_addresses_are_its_interfaces_but_loopback_and_link_local() -> None:
    assert high_availability.own_addresses(IP_JSON) == (
        "10.11.40.55",
        "10.11.40.60",
        "2001:db8::55",
    )
    assert high_availability.own_addresses("not json") == ()


def test_this_nodes_addresses_come_from_ip() -> None:
    """The real `ip`, as `balancer serve` runs it: none of loopback or link-local."""
    listed = subprocess.run(["ip", "-json", "address", "show"], capture_output=True, text=True)
    found = asyncio.run(high_availability.node_addresses())
    assert found == high_availability.own_addresses(listed.stdout)
    assert not any(ip_address(address).is_loopback for address in found)


def fields(page: str) -> dict[str, str]:
    """Each form field's label and what it holds, in the page's order (a select: its choice)."""
    found = {}
    for label, for_ in re.findall(r'<label for="([^"]+)">(.*?)</label>', page, re.S):
        control = re.search(rf'<(input|select)[^>]*id="{label}"[^>]*>', page)
        assert control is not None, label
        value = re.search(r'value="([^"]*)"', control.group(0))
        if control.group(1) == "select":
            chosen = re.search(r"<option selected>([^<]*)", page[control.end() :])
            found[text(for_)] = chosen.group(1) if chosen else "(first)"
        else:
            found[text(for_)] = value.group(1) if value else ""
    return found


def errors(page: str) -> dict[str, str]:
    """The one line next to each refused field, by the field's id."""
    found = re.findall(r'<p class="field-error" id="(f-[a-z-]+)-error">(.*?)</p>', page, re.S)
    return {name: text(said) for name, said in found}


def focus(page: str) -> list[str]:
    return re.findall(r'id="([^"]+)"[^>]*\bautofocus\b', page)


def test_standalone_the_guides_form_create_a_clustered_pair(web: PairWeb) -> None:
    page = web.client.get(HA)
    assert page.status_code == 200
    assert "<h1>Create a Clustered Pair</h1>" in page.text
    assert list(fields(page.text)) == [
        "Local IP address",
        "IP address of new peer",
        "WebUI port of new peer",
        "Password for loadbalancer user on peer",
    ]
    # Nothing typed yet: only the port has the model's default (Pair.peer_port).
    assert fields(page.text)["IP address of new peer"] == ""
    assert fields(page.text)["WebUI port of new peer"] == "9443"
    assert re.findall(r"<option[^>]*>([^<]*)</option>", page.text) == list(ADDRESSES)
    assert ">Add new node</button>" in page.text
    assert 'aria-current="page">High-Availability Configuration</a>' in page.text  # menu, tab


def test_the_peers_certificate_is_shown_to_be_confirmed(web: PairWeb) -> None:
    shown = web.client.get(
        f"{HA}/fingerprint", params={"peer_address": "127.0.0.1", "peer_port": web.port}
    ).text
    assert f'<code id="peer-fingerprint">{web.fingerprint}</code>' in shown
    assert f'name="fingerprint" value="{web.fingerprint}"' in shown
    assert "It is the fingerprint the peer's balancer serve printed" in text(shown)
    with socket.socket() as closed:  # bound, never listening: refused
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        unreachable = web.client.get(
            f"{HA}/fingerprint", params={"peer_address": "127.0.0.1", "peer_port": port}
        ).text
    assert errors(unreachable) == {
        "f-fingerprint": f"cannot reach the peer at 127.0.0.1:{port} (Connection refused): is "
        "Balancer serving there, and is the port open between the nodes?"
    }
    assert 'name="fingerprint"' not in unreachable


def form(web: PairWeb, **sent: str) -> dict[str, str]:
    return {
        "csrf_token": web.csrf(),
        "local_address": "198.18.0.1",
        "peer_address": "127.0.0.1",
        "peer_port": str(web.port),
        "password": web.peer.password,
        **sent,
    }


def test_each_mistake_is_one_line_next_to_its_field_and_the_password_is_not_kept(
    web: PairWeb,
) -> None:
    cases = [
        (
            {"local_address": "10.0.0.9"},
            "f-local-address",
            "choose one of this node's own addresses",
        ),
        ({"peer_address": ""}, "f-peer-address", "give the peer's IP address"),
        ({"peer_address": "psm-2"}, "f-peer-address", "psm-2 is not an IP address"),
        ({"peer_address": "198.18.0.1"}, "f-peer-address", "198.18.0.1 is this node's own address"),
        (
            {"peer_address": "2001:db8::2"},
            "f-peer-address",
            "2001:db8::2 is not of the same family as 198.18.0.1",
        ),
        (
            {"peer_port": "99999"},
            "f-peer-port",
            "99999 is not a port: a whole number from 1 to 65535",
        ),
    ]
    for sent, where, said in cases:
        page = web.client.post(f"{HA}/pair", data=form(web, **sent))
        assert page.status_code == 422, sent
        assert errors(page.text) == {where: said}, sent
        assert focus(page.text) == [where], sent  # the keyboard starts at the refused field
        assert web.peer.password not in page.text
        kept = fields(page.text)
        assert kept["Password for loadbalancer user on peer"] == ""
        if "peer_address" not in sent:
            assert kept["IP address of new peer"] == "127.0.0.1"
    assert web.peer.asked == []  # nothing was sent to any peer


def test_without_script_the_first_add_new_node_shows_the_certificate_and_sends_nothing(
    web: PairWeb,
) -> None:
    page = web.client.post(f"{HA}/pair", data=form(web))
    assert page.status_code == 422
    assert f'<code id="peer-fingerprint">{web.fingerprint}</code>' in page.text
    assert errors(page.text) == {
        "f-fingerprint": "compare it with the fingerprint the peer's balancer serve printed and "
        "confirm it, then give the password again"
    }
    assert focus(page.text) == ["f-fingerprint"]
    assert fields(page.text)["IP address of new peer"] == "127.0.0.1"
    # Not confirmed: still nothing sent.
    again = web.client.post(f"{HA}/pair", data=form(web, fingerprint=web.fingerprint))
    assert "confirm that it is the fingerprint" in errors(again.text)["f-fingerprint"]
    assert web.peer.asked == []


def until_ended(web: PairWeb) -> Any:
    """The page once pairing has ended: the steps poll says where to go."""
    wait_for(
        "pairing to end",
        lambda: "hx-redirect" in web.client.get(f"{HA}/steps", headers={"HX-Request": "1"}).headers,
    )
    return web.client.get(HA)


def test_add_new_node_shows_the_steps_then_the_refusal_next_to_the_password(web: PairWeb) -> None:
    sent = form(web, fingerprint=web.fingerprint, confirmed="yes", password="not it")
    answer = web.client.post(f"{HA}/pair", data=sent, follow_redirects=False)
    assert (answer.status_code, answer.headers["location"]) == (303, HA)
    request, password, replace, author = web.peer.asked[0]
    assert (request.local, request.peer, request.port) == ("198.18.0.1", "127.0.0.1", web.port)
    assert request.fingerprint == web.fingerprint
    assert (password, replace, author) == ("not it", None, "loadbalancer")
    steps = text(web.client.get(HA).text)
    assert "Primary IP 198.18.0.1 Secondary IP 127.0.0.1" in steps
    assert "working Attempting to pair…" in steps
    assert "Checking the peer's certificate" in steps or "Signing in to the peer" in steps
    # The poll's answer is the steps alone, to go in the page's place for them.
    polled = web.client.get(f"{HA}/steps", headers={"HX-Request": "1"}).text
    assert polled.lstrip().startswith('<ol class="steps">')
    assert text(polled).startswith("working Attempting to pair…")
    # A second Add new node while this one runs goes to its steps and asks nothing.
    again = web.client.post(f"{HA}/pair", data=sent, follow_redirects=False)
    assert again.headers["location"] == HA
    assert len(web.peer.asked) == 1
    web.peer.go.set()
    page = until_ended(web)
    assert page.status_code == 422
    said = errors(page.text)
    assert list(said) == ["f-password"]
    assert "refused the password of its loadbalancer user" in said["f-password"]
    assert focus(page.text) == ["f-password"]
    kept = fields(page.text)
    assert kept["IP address of new peer"] == "127.0.0.1"
    assert kept["Password for loadbalancer user on peer"] == ""
    assert 'name="confirmed" value="yes" checked' in page.text
    # Shown once: the page is the form again after.
    assert web.client.get(HA).status_code == 200


def test_a_peer_with_services_is_asked_about_then_paired_and_broken(web: PairWeb) -> None:
    web.peer.services = ("Old-RDP", "Old-Web")
    web.peer.go.set()
    sent = form(web, fingerprint=web.fingerprint, confirmed="yes")
    web.client.post(f"{HA}/pair", data=sent, follow_redirects=False)
    asked = until_ended(web)
    assert "Replace the peer's services?" in asked.text
    assert "has 2 services of its own (Old-RDP, Old-Web)" in text(asked.text)
    assert focus(asked.text) == ["f-password"]  # the password is asked again
    assert web.peer.password not in asked.text
    sent = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', asked.text))
    sent = {**sent, "password": web.peer.password}
    web.client.post(f"{HA}/pair", data=sent, follow_redirects=False)
    assert web.peer.asked[-1][2] is True  # replace
    paired = until_ended(web)
    assert "<h1>High Availability Configuration - primary</h1>" in paired.text
    assert "Primary IP 198.18.0.1 (this node) Secondary IP 127.0.0.1" in text(paired.text)

    confirm = web.client.post(f"{HA}/break", data={"csrf_token": web.csrf()})
    assert 'role="alertdialog"' in confirm.text
    assert "Break the clustered pair with 127.0.0.1?" in text(confirm.text)
    assert focus(confirm.text) == []  # Cancel, a link: autofocus on it
    assert re.search(r'href="/lbadmin/high-availability" autofocus>Cancel', confirm.text)
    assert web.peer.breaks == []
    broken = web.client.post(f"{HA}/break", data={"csrf_token": web.csrf(), "confirm": "yes"})
    assert web.peer.breaks == ["loadbalancer"]
    said = text(broken.text)
    assert "The clustered pair was broken; this node stands alone:" in said
    assert "198.18.0.1 (Primary) keeps its configuration and users and the floating IPs" in said
    assert "<h1>Create a Clustered Pair</h1>" in broken.text


def test_the_secondary_sees_its_pair(web: PairWeb) -> None:
    web.paired("secondary", PairView(this=SECONDARY, peer=PRIMARY, link=0.3))
    page = web.client.get(HA).text
    assert "<h1>High Availability Configuration - secondary</h1>" in page
    assert "Primary IP 198.18.0.1 Secondary IP 198.18.0.2 (this node)" in text(page)
    assert ">Break Clustered Pair</button>" in page


# --- in Debian's chromium, by keyboard -----------------------------------------------------------


@pytest.fixture
def page(web: PairWeb) -> Iterator[Any]:
    """A browser signed in to ``web`` by keyboard (started after the application, stopped
    before it); skipped without Debian's chromium."""
    browser = pytest.importorskip("tests.browser")
    if not browser.CHROMIUM.exists():
        pytest.skip("needs Debian's chromium: `make system` installs it")
    with browser.chromium() as launched:
        opened = browser.open_page(launched, 1280, 900, bypass_csp=True)
        opened.goto(web.url)
        opened.wait_for_url("**/lbadmin/sign-in")
        has_focus(opened, "username")
        opened.keyboard.type("loadbalancer")
        opened.keyboard.press("Tab")
        opened.keyboard.type(PASSWORD)
        with opened.expect_navigation(url="**/lbadmin/"):
            opened.keyboard.press("Enter")
        yield opened


def has_focus(page: Any, id_: str) -> None:
    """Wait until the element ``id_`` has the keyboard, as a person waits to see the focus
    before pressing a key (Chromium applies autofocus after the load event)."""
    page.wait_for_function(
        "id => document.activeElement && document.activeElement.id === id", arg=id_
    )


def test_pair_and_break_by_keyboard(web: PairWeb, page: Any) -> None:
    from tests.browser import playwright, shoot
    from tests.test_webui_keyboard import focused, tab_order, tab_to

    expect = playwright.expect
    page.goto(web.url + "high-availability")
    expect(page.get_by_role("heading", name="Create a Clustered Pair", exact=True)).to_be_visible()
    page.locator("#f-local-address").focus()
    assert tab_order(page, 4) == [
        "Local IP address",
        "IP address of new peer",
        "WebUI port of new peer",
        "Password for loadbalancer user on peer",
        "Add new node",  # no certificate to confirm until the peer's address is given
    ]
    tab_to(page, "IP address of new peer")
    page.keyboard.type("127.0.0.1")
    page.keyboard.press("Tab")
    page.keyboard.press("Control+A")
    page.keyboard.type(str(web.port))
    page.keyboard.press("Tab")
    page.keyboard.type("not it")
    # The certificate the peer presents is shown once its address and port are given.
    expect(page.locator("#peer-fingerprint")).to_have_text(web.fingerprint)
    shoot(page, "ha-create-pair")
    # Enter before the certificate is confirmed: nothing is sent, the box has the keyboard and
    # says why, and the password typed stays in its field.
    page.keyboard.press("Enter")
    expect(page.locator("#f-fingerprint-error")).to_contain_text("confirm that it is the")
    has_focus(page, "f-fingerprint")
    assert page.locator("#f-password").input_value() == "not it"
    assert web.peer.asked == []
    page.keyboard.press("Space")
    page.keyboard.press("Tab")
    assert focused(page) == "Add new node"
    with page.expect_navigation(url="**/lbadmin/high-availability"):
        page.keyboard.press("Enter")
    # The steps as they happen, while the peer is asked.
    expect(page.locator("#pair-steps")).to_contain_text("Attempting to pair…")
    expect(page.locator("#pair-steps")).to_contain_text("its certificate is the one confirmed")
    with page.expect_response("**/high-availability/steps"):  # one refresh of the steps
        pass
    expect(page.locator("#pair-steps li")).to_have_count(3)
    expect(page.locator("main")).to_have_count(1)  # the steps, not a page in the page
    shoot(page, "ha-attempting-to-pair")
    web.peer.go.set()
    # Refused: the one line next to the password, which has the keyboard; all else kept.
    expect(page.locator("#f-password-error")).to_contain_text(
        "refused the password of its loadbalancer user"
    )
    has_focus(page, "f-password")
    assert page.locator("#f-password").get_attribute("aria-describedby") == "f-password-error"
    assert page.locator("#f-peer-address").input_value() == "127.0.0.1"
    assert page.locator("#f-peer-port").input_value() == str(web.port)
    assert page.locator("#f-password").input_value() == ""
    assert page.locator("#f-fingerprint").is_checked()
    shoot(page, "ha-refused")
    page.keyboard.type(web.peer.password)
    with page.expect_navigation(url="**/lbadmin/high-availability"):
        page.keyboard.press("Enter")
    heading = page.get_by_role("heading", name="High Availability Configuration - primary")
    expect(heading).to_be_visible()
    expect(page.locator("dd[data-node=secondary]")).to_have_text("127.0.0.1")
    shoot(page, "ha-paired")
    assert [asked[1:3] for asked in web.peer.asked] == [
        ("not it", None),
        (web.peer.password, None),
    ]

    tab_to(page, "Break Clustered Pair")
    with page.expect_navigation(url="**/lbadmin/high-availability/break"):
        page.keyboard.press("Enter")
    has_focus_on_cancel = "() => document.activeElement.textContent.trim() === 'Cancel'"
    page.wait_for_function(has_focus_on_cancel)
    shoot(page, "ha-break-confirm")
    page.keyboard.press("Shift+Tab")
    assert focused(page) == "Yes, break the pair"
    with page.expect_navigation(url="**/lbadmin/high-availability"):
        page.keyboard.press("Enter")
    expect(page.get_by_role("status")).to_contain_text("The clustered pair was broken")
    assert web.store.node_settings().pair is None


def test_the_status_bar_and_the_overviews_nodes_follow_the_pair(web: PairWeb, page: Any) -> None:
    from tests.browser import SEEN_WITHIN, playwright, shoot

    expect = playwright.expect
    assert web.local.post("/api/v1/virtual-services", json=VIP).is_success
    for label, ip in (("PSM1", "192.168.94.105"), ("PSM2", "192.168.94.106")):
        server = {"label": label, "ip": ip, "port": 3389}
        added = web.local.post("/api/v1/virtual-services/CyberArk-PSM/real-servers", json=server)
        assert added.is_success, added.text
    assert web.local.post("/api/v1/commit").is_success
    web.paired("primary", PairView(this=PRIMARY, peer=SECONDARY, link=0.4))
    page.goto(web.url)
    bar = page.locator("#pair-status")
    expect(bar).to_have_text(re.compile(r"Role\s*Primary\s*State\s*Active\s*Link\s*0.4 s ago"))
    peer_row = page.locator("tr[data-node=peer]")
    expect(peer_row).to_contain_text("Passive")
    expect(peer_row).to_contain_text("behind by 2")
    shoot(page, "ha-overview")
    # The overview's refresh brings both the bar and the nodes again, in place.
    web.cluster.shown = PairView(
        this=NodeView("198.18.0.1", "primary", "fault", 7, "haproxy", "not answering", "owner"),
        peer=NodeView("198.18.0.2", "secondary", "active", 7, "builtin", None, "in sync"),
        link=0.2,
    )
    expect(bar).to_have_text(re.compile(r"State\s*Fault\s*Link\s*0.2 s ago"), timeout=SEEN_WITHIN)
    expect(peer_row).to_contain_text("in sync", timeout=SEEN_WITHIN)
    # A page that does not refresh itself gets the bar from its heartbeat.
    page.goto(web.url + "logs")
    web.cluster.shown = dataclasses.replace(web.cluster.shown, link=6.0)
    expect(bar).to_have_text(re.compile(r"Link\s*6.0 s ago"), timeout=SEEN_WITHIN)


def test_the_secondarys_configuration_is_read_only_in_the_browser(web: PairWeb, page: Any) -> None:
    from tests.browser import playwright, shoot

    expect = playwright.expect
    assert web.local.post("/api/v1/virtual-services", json=VIP).is_success
    web.paired("secondary", PairView(this=SECONDARY, peer=PRIMARY, link=0.3))
    page.goto(web.url + "virtual-services/CyberArk-PSM/modify")
    note = page.get_by_role("note")
    expect(note).to_contain_text("the cluster configuration is read-only here")
    link = note.get_by_role("link")
    expect(link).to_have_attribute(
        "href", "https://198.18.0.1:9443/lbadmin/virtual-services/CyberArk-PSM/modify"
    )
    expect(page.get_by_label("Label", exact=True)).to_be_disabled()
    expect(page.get_by_role("button", name="Update")).to_be_disabled()
    expect(page.get_by_role("link", name="Cancel")).to_be_enabled()
    shoot(page, "ha-secondary-read-only")
    # System Overview's actions stay: drain, halt and online act on both nodes.
    page.goto(web.url)
    expect(page.get_by_role("note")).to_have_count(0)


def test_the_pairs_pages_have_no_serious_accessibility_violation(web: PairWeb, page: Any) -> None:
    """axe-core (tests/test_webui_accessibility.py) on each page of the pair, in each state."""
    from tests.browser import playwright
    from tests.test_webui_accessibility import AXE, RUN_AXE, SERIOUS

    if not AXE.exists():
        pytest.skip("needs axe-core: `make test` installs it (npm ci --prefix tests/axe)")
    expect = playwright.expect
    checked: dict[str, list[Any]] = {}

    def check(name: str) -> None:
        page.add_script_tag(path=str(AXE))
        checked[name] = page.evaluate(RUN_AXE, list(SERIOUS))

    page.goto(web.url + "high-availability")
    check("create-a-clustered-pair")
    web.peer.services = ("Old-RDP",)
    page.locator("#f-peer-address").fill("127.0.0.1")
    page.locator("#f-peer-port").fill(str(web.port))
    page.locator("#f-password").fill("not it")
    page.get_by_role("button", name="Add new node").click()  # not confirmed: refused
    expect(page.locator("#f-fingerprint-error")).to_be_visible()
    expect(page.locator("#peer-fingerprint")).to_have_text(web.fingerprint)
    check("refused-certificate-to-confirm")
    page.locator("#f-fingerprint").check()
    page.locator("#f-password").fill("not it")
    page.get_by_role("button", name="Add new node").click()
    expect(page.locator("#pair-steps")).to_contain_text("Attempting to pair…")
    check("attempting-to-pair")
    web.peer.go.set()
    expect(page.locator("#f-password-error")).to_be_visible()
    page.locator("#f-password").fill(web.peer.password)
    page.get_by_role("button", name="Add new node").click()
    expect(page.get_by_role("alertdialog")).to_contain_text("Old-RDP")
    check("replace-the-peers-services")
    page.locator("#f-password").fill(web.peer.password)
    page.get_by_role("button", name="Yes, replace them and pair").click()
    expect(page.get_by_role("button", name="Break Clustered Pair")).to_be_visible()
    web.cluster.shown = PairView(this=PRIMARY, peer=SECONDARY, link=0.4)
    page.reload()
    check("high-availability-configuration-primary")
    page.get_by_role("button", name="Break Clustered Pair").click()
    expect(page.get_by_role("alertdialog")).to_be_visible()
    check("break-clustered-pair")
    page.goto(web.url)
    expect(page.locator("tr[data-node=peer]")).to_be_visible()
    check("system-overview-with-both-nodes")
    assert web.local.post("/api/v1/virtual-services", json=VIP).is_success
    web.paired("secondary", PairView(this=SECONDARY, peer=PRIMARY, link=0.4))
    page.goto(web.url + "virtual-services/CyberArk-PSM/modify")
    expect(page.get_by_role("note")).to_be_visible()
    check("secondary-read-only")
    found = {name: violations for name, violations in checked.items() if violations}
    assert not found, json.dumps(found, indent=1)
    assert len(checked) == 8


def test_a_peer_showing_another_certificate_is_refused_and_shows_it_to_be_confirmed(
    web: PairWeb,
) -> None:
    other = ":".join(["AB"] * 32)
    web.peer.shows, web.peer.go = web.fingerprint, threading.Event()
    web.peer.go.set()
    sent = form(web, fingerprint=other, confirmed="yes")
    web.client.post(f"{HA}/pair", data=sent, follow_redirects=False)
    page = until_ended(web)
    assert page.status_code == 422
    said = errors(page.text)
    assert list(said) == ["f-fingerprint"]
    assert (
        f"showed a certificate with SHA-256 fingerprint {web.fingerprint}" in said["f-fingerprint"]
    )
    assert "its password was not sent" in said["f-fingerprint"]
    # What the peer presents now, to be confirmed afresh; the keyboard is on the confirmation.
    assert f'<code id="peer-fingerprint">{web.fingerprint}</code>' in page.text
    assert 'name="confirmed" value="yes" checked' not in page.text
    assert focus(page.text) == ["f-fingerprint"]
    assert fields(page.text)["IP address of new peer"] == "127.0.0.1"


def test_the_pairs_heartbeat_settings_are_changed_on_the_primary(web: PairWeb) -> None:
    web.paired("primary", PairView(this=PRIMARY, peer=SECONDARY, link=0.3))
    page = web.client.get(HA).text
    assert fields(page)["Advert interval (seconds)"] == "0.2"
    assert 'id="f-preempt" name="preempt" value="on" aria' in page  # not checked
    assert fields(page)["Replication port (TCP)"] == "7778"
    sent = {
        "csrf_token": web.csrf(),
        "advert_interval": "1",
        "preempt": "on",
        "replication_port": "7779",
    }
    done = web.client.post(f"{HA}/settings", data=sent)
    assert done.status_code == 200
    assert "Saved: advert interval 1 s, preemption on, replication port 7779." in text(done.text)
    pair = web.store.node_settings().pair
    assert pair is not None
    assert (pair.advert_interval, pair.preempt, pair.replication_port) == (1.0, True, 7779)
    assert fields(done.text)["Advert interval (seconds)"] == "1"
    assert fields(done.text)["Replication port (TCP)"] == "7779"
    for typed, said in (("ssh", "'ssh' is not a TCP port number"), ("70000", "65535")):
        refused = web.client.post(f"{HA}/settings", data={**sent, "replication_port": typed})
        assert refused.status_code == 422
        assert said in errors(refused.text)["f-replication-port"], typed
        assert fields(refused.text)["Replication port (TCP)"] == typed
        assert "f-advert-interval" not in errors(refused.text)
    for typed, said in (
        ("fast", "'fast' is not a number of seconds"),
        ("0.333", "0.333 s must be in hundredths of a second"),
    ):
        refused = web.client.post(f"{HA}/settings", data={**sent, "advert_interval": typed})
        assert refused.status_code == 422
        assert said in errors(refused.text)["f-advert-interval"], typed
        assert focus(refused.text) == ["f-advert-interval"]
        assert fields(refused.text)["Advert interval (seconds)"] == typed
    web.cluster.refusal = "the peer's keepalived: timed out: nothing was changed on either node"
    refused = web.client.post(f"{HA}/settings", data={**sent, "advert_interval": "0.5"})
    assert refused.status_code == 409
    assert f"Not changed: {web.cluster.refusal}" in text(refused.text)
    pair = web.store.node_settings().pair
    assert pair is not None
    assert pair.advert_interval == 1.0


def test_the_secondary_shows_the_heartbeat_settings_it_takes_from_the_primary(
    web: PairWeb,
) -> None:
    web.paired("secondary", PairView(this=SECONDARY, peer=PRIMARY, link=0.3))
    page = web.client.get(HA).text
    assert "Changed on the Primary; this node takes them from it." in text(page)
    legend = '<legend class="sr-only">Heartbeat settings</legend>'
    assert re.search(rf"<fieldset disabled>\s*{legend}", page)
    assert ">Update</button>" not in page


def test_the_heartbeat_settings_by_keyboard(web: PairWeb, page: Any) -> None:
    """On the Primary: Tab through the heartbeat settings, type a port that is not one (refused
    at its field, with the keyboard there and what was typed kept), correct it, save by Enter."""
    from tests.browser import playwright
    from tests.test_webui_keyboard import tab_order, tab_to

    web.paired("primary", PairView(this=PRIMARY, peer=SECONDARY, link=0.3))
    page.goto(web.url + "high-availability")
    tab_to(page, "Advert interval (seconds)")
    assert tab_order(page, 3) == [
        "Advert interval (seconds)",
        "Preemption",
        "Replication port (TCP)",
        "Update",
    ]
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Control+A")
    page.locator("#f-replication-port").press_sequentially("77a8")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    playwright.expect(page.locator("#f-replication-port-error")).to_have_text(
        "'77a8' is not a TCP port number"
    )
    has_focus(page, "f-replication-port")
    assert page.locator("#f-replication-port").input_value() == "77a8"
    page.keyboard.press("Control+A")
    page.locator("#f-replication-port").press_sequentially("7779")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    playwright.expect(page.get_by_role("status")).to_contain_text("replication port 7779")
    pair = web.store.node_settings().pair
    assert pair is not None
    assert pair.replication_port == 7779
