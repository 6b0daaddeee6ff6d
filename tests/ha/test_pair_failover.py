"""The pair's floating VIPs end to end (issue 12): two real nodes, two lab PSM servers and a
client in namespaces (``tests.ha.cluster``), on each engine. The VIPs answer from one node;
a cut link, a dead engine and a graceful stop move them to the other, and the times are printed
(the goals are the bench's: ``python -m bench --scenarios ha``); Restart Heartbeat and a
switchover refuse no connection; breaking the pair leaves the VIPs on one node. One topology per engine serves the module: each test leaves the pair with one
node Active and the other Passive, and the break comes last.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from balancer.ha.keepalived import KEEPALIVED
from tests.ha.cluster import FAILURES, PSM_ADDRESSES, Outcome, Topology, topology, wait_for
from tests.netns import needs_netns

needs_keepalived = pytest.mark.skipif(
    shutil.which(KEEPALIVED) is None, reason="keepalived is not installed (make system installs it)"
)
pytestmark = [needs_netns, needs_keepalived, pytest.mark.slow]


@pytest.fixture(scope="module", params=["builtin", "haproxy"])
def pair(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Topology]:
    engine: str = request.param
    with topology(tmp_path_factory.mktemp(f"pair-{engine}"), engine) as running:
        running.pair_with_psm()
        running.settled()
        yield running


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


def test_a_graceful_stop_moves_the_vips_and_refuses_nothing(pair: Topology) -> None:
    # Each attempt waits long enough for a SYN sent while no node holds the VIP (about 0.1 s)
    # to be sent again: slower, but never refused.
    moved = pair.fail_over("stop", timeout=5.0)
    print(
        f"{pair.engine}: graceful stop: a new connection succeeded through the other node "
        f"{moved.seconds:.3f} s later"
    )
    # A connection the old node had accepted when the VIPs left it is reset by the new owner,
    # which has no such connection: a takeover keeps no connection state. A new connection is
    # never refused, nor left unanswered.
    failed = [moved.said(o) for o in moved.failed if o.error != "reset"]
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
    # As for a graceful stop, a connection accepted by the node the VIPs leave may be reset.
    failed = [o for o in outcomes if not o.ok and o.error != "reset"]
    assert failed == [], f"{len(failed)} of {len(outcomes)} failed: {failed[:3]}"
