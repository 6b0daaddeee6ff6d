"""The HA pair in the WebUI: every page's status bar (role, state, link), the Secondary's
read-only pages, System Overview's two nodes, and Cluster Configuration > High-Availability
Configuration (the guide's 14.1.2 form, its steps, the pair and Break Clustered Pair).

The pair is a Cluster whose view the test sets (``Shown``) and, for the form, a pairing that
the test drives (``Pairing``, standing in for ``balancer.pair.pairing``): the pages are what is
tested here, tests/ha/ pairs real nodes. In process first (quick); then in Debian's chromium,
by keyboard, against the same application served over HTTPS on loopback.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from balancer import users
from balancer.app import create_app
from balancer.controller import Controller
from balancer.model import Pair
from balancer.pair.cluster import Cluster
from balancer.pair.status import NodeView, PairView
from balancer.store import Store
from tests.webapp import PASSWORD, FakeEngine, csrf_of

PRIMARY = NodeView("198.18.0.1", "primary", "active", 7, "haproxy", None, "owner")
SECONDARY = NodeView("198.18.0.2", "secondary", "passive", 5, "builtin", None, "behind by 2")
VIP = {"label": "CyberArk-PSM", "ip": "192.168.94.100", "ports": "3389"}


class Shown(Cluster):
    """A Cluster whose view the test sets; its Pair is the store's, as the real one's."""

    shown: PairView | None = None

    def view(self) -> PairView | None:
        return self.shown


@dataclass
class PairWeb:
    store: Store
    cluster: Shown
    client: TestClient  # over HTTPS, signed in, as a browser on another machine
    local: TestClient  # as the `balancer` command on the Unix socket

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


@contextmanager
def pair_web(tmp_path: Path) -> Iterator[PairWeb]:
    from balancer.front.gate import local

    with Store(tmp_path / "balancer.db") as store:
        users.add_user(store, "loadbalancer", PASSWORD, author="test")
        controller = Controller(store, FakeEngine())
        cluster = Shown(store, controller, tmp_path)
        app = create_app(store, controller, cluster, tmp_path, lambda restart: None)
        with (
            TestClient(app, base_url="https://balancer.test") as client,
            TestClient(local(app), base_url="http://balancer") as local_client,
        ):
            web = PairWeb(store, cluster, client, local_client)
            token = csrf_of(client.get("/lbadmin/sign-in").text)
            signed = client.post(
                "/lbadmin/sign-in",
                data={"username": "loadbalancer", "password": PASSWORD, "csrf_token": token},
                follow_redirects=False,
            )
            assert signed.status_code == 303, signed.text
            yield web


@pytest.fixture
def web(tmp_path: Path) -> Iterator[PairWeb]:
    with pair_web(tmp_path) as running:
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


def test_a_peer_not_heard_yet_is_shown_by_its_address(web: PairWeb) -> None:
    this = NodeView("198.18.0.2", "secondary", "unknown", None, "builtin", None, "unknown")
    web.paired("secondary", PairView(this=this, peer=None, link=None))
    assert rows(web.client.get("/lbadmin/").text) == [
        "198.18.0.2 (this node) Secondary Unknown none yet unknown builtin",
        "198.18.0.1 Primary not heard yet \N{EM DASH} \N{EM DASH} \N{EM DASH}",
    ]
