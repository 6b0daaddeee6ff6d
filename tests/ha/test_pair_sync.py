"""Pairing and the Secondary end to end (issue 12): two real nodes in namespaces
(``tests.ha.cluster``), on each engine. Each bad input refuses the pairing with one line and
changes nothing on either node; `balancer ha pair` on the Primary then pairs them; a commit on
the Primary runs on the Secondary, a user added on the Primary signs in on the Secondary, and an
edit on the Secondary is refused. One topology per engine serves the module, in this order.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from balancer.client import ApiError
from balancer.ha import trust
from balancer.ha.keepalived import KEEPALIVED
from tests.ha.cluster import (
    PASSWORD,
    PSM_ADDRESSES,
    Node,
    Topology,
    topology,
    wait_for,
)
from tests.netns import needs_netns

needs_keepalived = pytest.mark.skipif(
    shutil.which(KEEPALIVED) is None, reason="keepalived is not installed (make system installs it)"
)
pytestmark = [needs_netns, needs_keepalived, pytest.mark.slow]
NEW_USER, NEW_PASSWORD = "operator2", "the second operator's password"


@pytest.fixture(scope="module", params=["builtin", "haproxy"])
def nodes(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Topology]:
    """Two standalone nodes, the PSM preset committed on the one to be the Primary."""
    engine: str = request.param
    with topology(tmp_path_factory.mktemp(f"sync-{engine}"), engine) as running:
        running.commit_psm()
        yield running


def _state(node: Node) -> dict[str, Any]:
    """What pairing could change on a node."""
    client = node.client
    return {
        "pair": node.pair_view(),
        "pair files": trust.directory(node.data_dir).exists()
        and sorted(p.name for p in trust.directory(node.data_dir).iterdir()),
        "config": client.get("/config"),
        "revisions": client.get("/revisions"),
        "users": client.get("/users"),
        "keepalived": node.keepalived_running(),
    }


@pytest.mark.parametrize(
    ("given", "said"),
    [
        ({"password": "not the password"}, "wrong password"),
        ({"fingerprint": "primary"}, "fingerprint"),
        ({"peer": PSM_ADDRESSES["PSM1"]}, "unreachable"),  # a host where nothing answers 9443
    ],
    ids=["wrong password", "wrong fingerprint", "unreachable peer"],
)
def test_a_bad_pairing_is_refused_in_one_line_and_changes_nothing(
    nodes: Topology, given: dict[str, str], said: str
) -> None:
    if given.get("fingerprint") == "primary":
        given = {"fingerprint": nodes.primary.fingerprint}  # a real certificate, not the peer's
    before = [_state(node) for node in nodes.nodes]
    refused = nodes.pair(**given)
    assert refused.returncode != 0
    message = refused.stderr.strip()
    assert said in message.lower(), message
    assert "\n" not in message, message
    assert "Traceback" not in refused.stdout + refused.stderr
    assert PASSWORD not in refused.stdout + refused.stderr
    assert [_state(node) for node in nodes.nodes] == before


def test_pairing_with_the_command_line(nodes: Topology) -> None:
    done = nodes.pair()
    assert done.returncode == 0, done.stdout + done.stderr
    primary, secondary = nodes.primary, nodes.secondary
    head = primary.client.get("/status")["engine"]["revision"]
    wait_for(
        "the Secondary running the Primary's revision",
        lambda: secondary.client.get("/status")["engine"]["revision"] == head,
    )
    assert secondary.client.get("/config") == primary.client.get("/config")
    owner = nodes.settled()
    assert owner.holds(nodes.vips[0])
    for node, role in ((primary, "primary"), (secondary, "secondary")):
        view = node.pair_view()
        assert view is not None
        assert view["this"]["role"] == role
        assert view["this"]["address"] == node.address
    assert nodes.client.lands() in PSM_ADDRESSES


def test_a_commit_on_the_primary_is_live_on_the_secondary(nodes: Topology) -> None:
    primary, secondary = nodes.primary, nodes.secondary
    primary.client.patch("/virtual-services/CyberArk-PSM/real-servers/PSM2", {"weight": 7})
    committed = primary.client.post("/commit")
    revision = committed["revision"]
    # The commit's answer says whether the Secondary applied it: revision, digest, time.
    told = committed["secondary"]
    assert (told["revision"], told["applied"]) == (revision, True), told["said"]
    wait_for(
        "the Secondary's engine running the commit",
        lambda: secondary.client.get("/status")["engine"]["revision"] == revision,
    )
    server = secondary.client.get("/virtual-services/CyberArk-PSM/real-servers")
    assert {s["label"]: s["weight"] for s in server}["PSM2"] == 7
    heads = [node.client.get("/revisions")[0] for node in nodes.nodes]
    assert heads[0]["id"] == heads[1]["id"] == revision
    assert heads[0]["digest"] == heads[1]["digest"] == told["digest"]


def test_a_user_added_on_the_primary_signs_in_on_the_secondary(nodes: Topology) -> None:
    nodes.primary.client.post("/users", {"name": NEW_USER, "password": NEW_PASSWORD})
    wait_for(
        "the user on the Secondary",
        lambda: NEW_USER in [u["name"] for u in nodes.secondary.client.get("/users")],
    )
    assert nodes.client.signs_in(nodes.secondary, NEW_USER, NEW_PASSWORD)
    assert not nodes.client.signs_in(nodes.secondary, NEW_USER, "not the password")


def test_an_edit_on_the_secondary_is_refused_and_points_to_the_primary(nodes: Topology) -> None:
    secondary = nodes.secondary
    before = secondary.client.get("/revisions")
    with pytest.raises(ApiError) as refused:
        secondary.client.patch("/virtual-services/CyberArk-PSM/real-servers/PSM2", {"weight": 3})
    assert refused.value.status == 409
    assert nodes.primary.address in str(refused.value)
    by_cli = secondary.cli("rip", "modify", "CyberArk-PSM", "PSM2", "--weight", "3")
    assert by_cli.returncode != 0
    assert nodes.primary.address in by_cli.stderr
    assert "\n" not in by_cli.stderr.strip()
    assert secondary.client.get("/revisions") == before
