"""Persistence replication end to end (issue 13): two real nodes paired with `balancer ha pair`,
two lab PSM servers and a client with twenty addresses of its own, each address a client to
source-IP persistence, each host in a network namespace (``tests.ha.cluster``); on each engine,
one topology per engine for the whole module, its tests in this order:

- twenty clients stick to their PSM servers (both servers used); the Active node's link is cut,
  and every one of them reconnects to the same server through the other node;
- a planned switchover back (`balancer ha switchover`) refuses no connection, and every client
  is on its server afterwards, through the node that took the VIPs;
- the Secondary, stopped with its engine (its table gone) and started again, already lists
  every entry when it says Passive again; the Primary's link is then cut, and every client
  lands on its server through the Secondary;
- `balancer persistence list` shows the same entries on both nodes.
"""

from __future__ import annotations

import functools
import re
import shutil
import time
from collections.abc import Iterator

import pytest

from balancer.ha.keepalived import KEEPALIVED
from tests.ha.cluster import PSM_ADDRESSES, Node, Topology, topology, wait_for
from tests.netns import needs_netns

needs_keepalived = pytest.mark.skipif(
    shutil.which(KEEPALIVED) is None, reason="keepalived is not installed (make system installs it)"
)
pytestmark = [needs_netns, needs_keepalived, pytest.mark.slow]


class Pair:
    """The topology, paired with the PSM preset, and where each client stuck first."""

    def __init__(self, running: Topology) -> None:
        self.running = running
        self.servers: dict[str, str] = {}  # source address -> PSM server


@pytest.fixture(scope="module", params=["builtin", "haproxy"])
def pair(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pair]:
    engine: str = request.param
    with topology(tmp_path_factory.mktemp(f"persistence-{engine}"), engine) as running:
        running.pair_with_psm()
        running.settled()
        yield Pair(running)


def _on_their_servers(pair: Pair, through: Node) -> None:
    """Every client opens a session again at once: each reaches the server it stuck to, and
    ``through`` carries every one."""
    running = pair.running
    sessions = running.client.open_all(running.sources)
    try:
        moved = {s.source: (pair.servers[s.source], s.server) for s in sessions}
        moved = {source: was for source, was in moved.items() if was[0] != was[1]}
        assert moved == {}, f"{len(moved)} of {len(sessions)} clients moved (was, now): {moved}"
        carriers = running.carriers(sessions)
        assert {node.label for node in carriers} == {through.label}
    finally:
        for session in sessions:
            session.close()


def _replicated(pair: Pair, node: Node) -> None:
    """Wait until ``node`` lists every client on its server (the entries flow in well under a
    second; the goal is the bench's)."""

    def missing() -> dict[str, str | None]:
        listed = node.persistence()
        return {s: listed.get(s) for s, server in pair.servers.items() if listed.get(s) != server}

    try:
        wait_for(f"{node.label} listing every client", lambda: not missing())
    except AssertionError:
        left = missing()
        raise AssertionError(
            f"{node.label} lacks {len(left)} of {len(pair.servers)} entries (has): {left}"
        ) from None


def test_twenty_clients_keep_their_servers_when_the_active_node_is_cut(pair: Pair) -> None:
    running = pair.running
    owner = running.settled()
    other = running.other(owner)
    pair.servers = running.client.servers(running.sources)
    assert set(pair.servers.values()) == set(PSM_ADDRESSES), pair.servers
    _on_their_servers(pair, owner)  # they stick
    _replicated(pair, other)
    owner.cut()
    try:
        running.taken_by(other)
        _on_their_servers(pair, other)
    finally:
        owner.heal()
    assert running.settled() is other  # the healed node stays Passive (no preemption)


def test_a_planned_switchover_refuses_nothing_and_keeps_every_client(pair: Pair) -> None:
    running = pair.running
    owner = running.settled()
    running.client.watch(timeout=5.0)  # long enough for a SYN sent while no node holds the VIP
    try:
        running.client.first_success_after(time.monotonic())
        done = owner.cli("ha", "switchover")
        assert done.returncode == 0, done.stdout + done.stderr
        running.client.first_success_after(time.monotonic())
    finally:
        outcomes = running.client.stop_watching()
    # A connection accepted by the node the VIPs leave may be lost; none is refused.
    failed = [o for o in outcomes if not o.ok and not o.connected]
    assert failed == [], f"{len(failed)} of {len(outcomes)} failed: {failed[:3]}"
    # The watching client is one more client: it stays on one server throughout.
    assert len({o.server for o in outcomes if o.ok}) == 1
    taker = running.settled()
    assert taker is running.other(owner)
    _on_their_servers(pair, taker)


def test_a_secondary_restarted_empty_relearns_the_table_before_it_could_take_over(
    pair: Pair,
) -> None:
    running = pair.running
    primary, secondary = running.primary, running.secondary
    assert running.settled() is primary, "the Primary is Active after the switchover back"
    _replicated(pair, secondary)
    secondary.stop()  # keepalived, the engine (and its table) and the management service
    assert not secondary.keepalived_running()
    secondary.start()
    # At the first moment it says Passive, ready to take over, it lists every entry already.
    wait_for(f"{secondary.label} Passive again", lambda: secondary.state() == "passive")
    listed = secondary.persistence()
    missing = {s: server for s, server in pair.servers.items() if listed.get(s) != server}
    assert missing == {}, f"{len(missing)} of {len(pair.servers)} entries not relearnt: {missing}"
    running.settled()
    primary.cut()
    try:
        running.taken_by(secondary)
        _on_their_servers(pair, secondary)
    finally:
        primary.heal()
    assert running.settled() is secondary


def test_both_nodes_list_the_same_entries(pair: Pair) -> None:
    running = pair.running
    running.settled()

    def same() -> dict[str, str] | None:
        lists = [node.persistence() for node in running.nodes]
        return lists[0] if lists[0] == lists[1] else None

    # Connections ending renew entries: the lists settle once the last renewal has crossed.
    listed = wait_for("the same entries on both nodes", same)
    assert pair.servers.items() <= listed.items()


def test_a_clear_on_either_node_clears_both_tables(pair: Pair) -> None:
    """HAProxy's peers carry no removal: without the node asking its peer to clear too, the
    peer would keep its entries (and teach them back at the next resync)."""
    running = pair.running
    secondary = running.secondary
    wait_for("entries on the Secondary", secondary.persistence)
    done = secondary.cli("persistence", "clear", "CyberArk-PSM")
    assert done.returncode == 0, done.stderr
    here, there = done.stdout.splitlines()
    assert re.fullmatch(r"[1-9]\d* entries cleared", here), here
    assert re.fullmatch(r"the peer: \d+ entries cleared", there), there
    # Closed sessions renew nothing: both tables end empty.
    for node in running.nodes:
        assert wait_for(f"{node.label}'s table empty", functools.partial(_empty, node)) is True


def _empty(node: Node) -> bool:
    return node.persistence() == {}
