"""The HA pair end to end (issue 12): two real nodes, two lab PSM servers and a client, each
in a network namespace (``tests.ha.cluster``), on each engine, one topology per engine for the
whole module, its tests in this order:

- each bad input refuses the pairing in one line and changes nothing on either node;
  `balancer ha pair` on the Primary then pairs them;
- a commit on the Primary runs on the Secondary, a drain asked on the Secondary is done by the
  Primary on both, a user added on the Primary signs in on the Secondary, a second factor used
  on one node is refused on the other, and an edit on the Secondary is refused;
- the VIPs answer from the Active node alone; a cut link, a dead engine and a graceful stop move
  them to the other node, and the times are printed (the goals are the bench's: ``python -m
  bench --scenarios ha``); preemption turned on brings them back to the Primary; Restart
  Heartbeat and a switchover refuse no connection; each of these leaves the pair with one node
  Active and the other Passive;
- breaking the pair leaves both standalone and the VIPs on one node.
"""

from __future__ import annotations

import functools
import shutil
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from balancer import totp
from balancer.client import ApiError
from balancer.ha import trust
from balancer.ha.keepalived import KEEPALIVED
from balancer.ha.sync import StepUsed
from balancer.store import Store
from tests.ha.cluster import (
    FAILURES,
    PASSWORD,
    PSM_ADDRESSES,
    Node,
    Outcome,
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
def pair(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Topology]:
    """Two standalone nodes, the PSM preset committed on the one to be the Primary; the tests
    pair them."""
    engine: str = request.param
    with topology(tmp_path_factory.mktemp(f"pair-{engine}"), engine) as running:
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
    pair: Topology, given: dict[str, str], said: str
) -> None:
    if given.get("fingerprint") == "primary":
        given = {"fingerprint": pair.primary.fingerprint}  # a real certificate, not the peer's
    before = [_state(node) for node in pair.nodes]
    refused = pair.pair(**given)
    assert refused.returncode != 0
    message = refused.stderr.strip()
    assert said in message.lower(), message
    assert "\n" not in message, message
    assert "Traceback" not in refused.stdout + refused.stderr
    assert PASSWORD not in refused.stdout + refused.stderr
    assert [_state(node) for node in pair.nodes] == before


def test_pairing_with_the_command_line(pair: Topology) -> None:
    done = pair.pair()
    assert done.returncode == 0, done.stdout + done.stderr
    primary, secondary = pair.primary, pair.secondary
    head = primary.client.get("/status")["engine"]["revision"]
    wait_for(
        "the Secondary running the Primary's revision",
        lambda: secondary.client.get("/status")["engine"]["revision"] == head,
    )
    assert secondary.client.get("/config") == primary.client.get("/config")
    owner = pair.settled()
    assert owner.holds(pair.vips[0])
    for node, role in ((primary, "primary"), (secondary, "secondary")):
        view = node.pair_view()
        assert view is not None
        assert view["this"]["role"] == role
        assert view["this"]["address"] == node.address
    assert pair.client.lands() in PSM_ADDRESSES


def test_a_commit_on_the_primary_is_live_on_the_secondary(pair: Topology) -> None:
    primary, secondary = pair.primary, pair.secondary
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
    heads = [node.client.get("/revisions")[0] for node in pair.nodes]
    assert heads[0]["id"] == heads[1]["id"] == revision
    assert heads[0]["digest"] == heads[1]["digest"] == told["digest"]


def test_a_drain_on_the_secondary_is_done_by_the_primary_and_live_on_both(pair: Topology) -> None:
    """Drain, halt and online asked on the Secondary go to the Primary over the pair's link,
    which applies them and answers once the Secondary runs them too."""
    primary, secondary = pair.primary, pair.secondary
    drained = secondary.cli("rip", "drain", "CyberArk-PSM", "PSM1")
    assert drained.returncode == 0, drained.stderr
    revision = primary.client.get("/status")["engine"]["revision"]
    assert drained.stdout == f"CyberArk-PSM/PSM1 is now drain (revision {revision})\n"
    assert [_psm1(node) for node in pair.nodes] == [(revision, "drain")] * 2
    audited = primary.client.get("/audit", text="drain")
    assert [e["action"] for e in audited].count("drain") == 1, audited
    # What the Primary refuses is said on the Secondary in one line, and nothing changes.
    refused = secondary.cli("rip", "halt", "CyberArk-PSM", "PSM9")
    assert refused.returncode != 0
    assert "was not done by the Primary" in refused.stderr, refused.stderr
    assert "'PSM9'" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert [_psm1(node) for node in pair.nodes] == [(revision, "drain")] * 2
    back = secondary.cli("rip", "online", "CyberArk-PSM", "PSM1")
    assert back.returncode == 0, back.stderr
    assert [_psm1(node) for node in pair.nodes] == [(revision + 1, "online")] * 2


def _psm1(node: Node) -> tuple[int, str]:
    """The revision ``node``'s engine runs, and PSM1's state in it."""
    revision = node.client.get("/status")["engine"]["revision"]
    servers = node.client.get("/virtual-services/CyberArk-PSM/real-servers")
    return revision, {s["label"]: s["state"] for s in servers}["PSM1"]


def test_a_user_added_on_the_primary_signs_in_on_the_secondary(pair: Topology) -> None:
    pair.primary.client.post("/users", {"name": NEW_USER, "password": NEW_PASSWORD})
    wait_for(
        "the user on the Secondary",
        lambda: NEW_USER in [u["name"] for u in pair.secondary.client.get("/users")],
    )
    assert pair.client.signs_in(pair.secondary, NEW_USER, NEW_PASSWORD)
    assert not pair.client.signs_in(pair.secondary, NEW_USER, "not the password")


def test_second_factors_used_on_one_node_are_refused_on_the_other(pair: Topology) -> None:
    """Over the pair's own link (balancer.pair.two_factor): the user signs in on the WebUI of
    either node. The second factor is enrolled in the Primary's store, opened here beside its
    management service (test_totp enrols through the pages)."""
    primary_db, secondary_db = (node.data_dir / "balancer.db" for node in pair.nodes)
    with Store(primary_db) as primary, Store(secondary_db) as secondary:
        secret, now = totp.new_secret(), time.time()
        codes = totp.enrol(
            primary, NEW_USER, secret, totp.code_at(secret, now), now, author=NEW_USER
        )
        try:
            wait_for("the second factor on the Secondary", lambda: _recovery(secondary) == 10)
            signs_in = functools.partial(pair.client.signs_in, user=NEW_USER, password=NEW_PASSWORD)
            # A recovery code typed on the Secondary is used up on the Primary.
            assert signs_in(pair.secondary, code=codes[0])
            assert not signs_in(pair.secondary, code=codes[0])
            wait_for("the code used up on the Primary", lambda: _recovery(primary) == 9)
            assert not signs_in(pair.primary, code=codes[0])
            wait_for(
                "the Primary's copy on the Secondary",
                lambda: not secondary.second_factors_used(0).recovery,
            )
            assert _recovery(secondary) == 9
            # The app's code that signed in on the Primary is refused on the Secondary (the
            # next step's: the enrolment used now's).
            later = time.time() + totp.STEP
            code = totp.code_at(secret, later)
            assert signs_in(pair.primary, code=code)
            used = StepUsed(NEW_USER, int(later // totp.STEP))
            wait_for(
                "the step on the Secondary",
                lambda: used in secondary.second_factors_used(0).steps,
            )
            assert not signs_in(pair.secondary, code=code)
        finally:
            primary.set_two_factor(NEW_USER, None, author="test", action="two_factor_reset")


def _recovery(store: Store) -> int | None:
    found = store.two_factor(NEW_USER)
    return None if found is None else len(found.recovery)


def test_an_edit_on_the_secondary_is_refused_and_points_to_the_primary(pair: Topology) -> None:
    secondary = pair.secondary
    before = secondary.client.get("/revisions")
    with pytest.raises(ApiError) as refused:
        secondary.client.patch("/virtual-services/CyberArk-PSM/real-servers/PSM2", {"weight": 3})
    assert refused.value.status == 409
    assert pair.primary.address in str(refused.value)
    by_cli = secondary.cli("rip", "modify", "CyberArk-PSM", "PSM2", "--weight", "3")
    assert by_cli.returncode != 0
    assert pair.primary.address in by_cli.stderr
    assert "\n" not in by_cli.stderr.strip()
    assert secondary.client.get("/revisions") == before


def test_the_vips_answer_from_the_active_node_alone(pair: Topology) -> None:
    owner = pair.settled()
    for vip in pair.vips:
        assert pair.owners(vip) == [owner]
    with pair.client.open() as session:
        assert session.server in PSM_ADDRESSES
        assert pair.carrier(session) is owner


@pytest.mark.parametrize("failure", ["link", "engine"])
def test_a_failed_active_node_hands_the_vips_over(pair: Topology, failure: str) -> None:
    """New connections succeed through the other node; the failed node, put right, stays
    Passive (no preemption)."""
    moved = pair.fail_over(failure)
    print(
        f"{pair.engine}: {FAILURES[failure]}: a new connection succeeded through the other "
        f"node {moved.seconds:.3f} s later"
    )
    assert moved.after is not moved.before
    for vip in pair.vips:
        assert pair.owners(vip) == [moved.after]
    with pair.client.open() as session:
        assert pair.carrier(session) is moved.after


def test_preemption_turned_on_brings_the_vips_back_to_the_primary(pair: Topology) -> None:
    """With the Secondary Active (after a failover), ``ha set --preempt`` has the Primary take
    the VIPs back at once, and its role change says it preempted."""
    primary, secondary = pair.primary, pair.secondary
    if pair.settled() is primary:
        pair.fail_over("link")
    assert pair.settled() is secondary
    done = primary.cli("ha", "set", "--preempt")
    assert done.returncode == 0, done.stderr
    try:
        pair.taken_by(primary)
        reason = f"preemption: the Active peer ({secondary.address}) has a lower priority (100)"
        wait_for(
            "the Primary's takeover audited with its reason",
            lambda: any(
                entry["action"] == "role_changed" and entry["detail"]["reason"] == reason
                for entry in primary.client.get("/audit", author="system")
            ),
        )
    finally:
        undone = primary.cli("ha", "set", "--no-preempt")
        assert undone.returncode == 0, undone.stderr
    assert pair.settled() is primary


def test_a_graceful_stop_moves_the_vips_and_refuses_nothing(pair: Topology) -> None:
    # Each attempt waits long enough for a SYN sent while no node holds the VIP (about 0.1 s)
    # to be sent again: slower, but never refused.
    moved = pair.fail_over("stop", timeout=5.0)
    print(
        f"{pair.engine}: graceful stop: a new connection succeeded through the other node "
        f"{moved.seconds:.3f} s later"
    )
    # A connection the old node had accepted when the VIPs left it is lost (the new owner has
    # no such connection: a takeover moves no connection state). A new one is never refused,
    # nor left unanswered.
    failed = [moved.said(o) for o in moved.failed if not o.connected]
    assert failed == [], f"{len(failed)} of {len(moved.outcomes)} failed (the stop at 0 s)"
    with pair.client.open() as session:
        assert pair.carrier(session) is moved.after


def test_restart_heartbeat_refuses_nothing_while_it_runs(pair: Topology) -> None:
    pair.settled()
    outcomes, said = _while(pair, lambda: pair.primary.client.post("/ha/heartbeat/restart"))
    assert said["message"]
    _nothing_refused(outcomes)
    pair.settled()


def test_a_switchover_makes_the_other_node_active_and_refuses_nothing(pair: Topology) -> None:
    owner = pair.settled()
    outcomes, _ = _while(pair, lambda: owner.client.post("/ha/switchover"))
    _nothing_refused(outcomes)
    assert pair.settled() is pair.other(owner)


def test_breaking_the_pair_leaves_both_standalone_and_the_vips_on_one_node(
    pair: Topology,
) -> None:
    owner = pair.settled()
    done = pair.primary.cli("ha", "break")
    assert done.returncode == 0, done.stderr
    wait_for("both nodes standalone", lambda: all(n.pair_view() is None for n in pair.nodes))
    for node in pair.nodes:
        wait_for(f"keepalived stopped on {node.label}", lambda: not node.keepalived_running())  # noqa: B023
    time.sleep(1.0)  # several advert intervals: a VIP still moving would show by now
    for vip in pair.vips:
        assert pair.owners(vip) == [owner]
    with pair.client.open() as session:
        assert pair.carrier(session) is owner


def _while(pair: Topology, action: Callable[[], Any]) -> tuple[list[Outcome], Any]:
    """What ``action`` answered, and every attempt of the client's to connect while it ran,
    each attempt long enough for a SYN sent while no node holds the VIP to be sent again."""
    pair.client.watch(timeout=5.0)
    try:
        pair.client.first_success_after(time.monotonic())
        said = action()
        pair.client.first_success_after(time.monotonic())
    finally:
        outcomes = pair.client.stop_watching()
    return outcomes, said


def _nothing_refused(outcomes: list[Outcome]) -> None:
    # As for a graceful stop, a connection accepted by the node the VIPs leave may be lost.
    failed = [o for o in outcomes if not o.ok and not o.connected]
    assert failed == [], f"{len(failed)} of {len(outcomes)} failed: {failed[:3]}"
