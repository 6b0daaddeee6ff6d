"""Drift of node settings on a real pair (issue 13's test "Drift: changing a node setting on one
node shows up as a difference"): two `balancer serve` nodes in namespaces (tests/ha/cluster.py),
the built-in engine, paired and running the PSM preset.

The nodes share this machine's kernel, so its clock (synchronised or not, the same on both, and
no offset beyond the round trip) and its hostname: two nodes of one hostname is a difference
Balancer shows from the start. The Secondary is then given 2 workers, as `balancer serve
--workers 2` keeps them (its node settings, then a restart), and the Primary's `balancer ha
status` says the nodes differ in workers.
"""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from balancer.ha.keepalived import KEEPALIVED
from balancer.store import Store
from tests.ha.cluster import PSM_ADDRESSES, Node, Topology, topology, wait_for
from tests.netns import needs_netns

needs_keepalived = pytest.mark.skipif(
    shutil.which(KEEPALIVED) is None, reason="keepalived is not installed (make system installs it)"
)
pytestmark = [needs_netns, needs_keepalived, pytest.mark.slow]


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    with topology(tmp_path_factory.mktemp("drift"), "builtin") as running:
        running.pair_with_psm()
        yield running


def compared(node: Node) -> dict[str, Any] | None:
    """The drift as ``node`` shows it once it has compared both nodes with every real server
    routed; None before."""
    drift = node.client.get("/ha")["drift"]
    if drift is None or drift["unseen"] is not None:
        return None
    settings = {row["setting"] for row in drift["rows"]}
    wanted = {f"route to {address}" for address in PSM_ADDRESSES.values()} | {"clock offset"}
    return {row["setting"]: row for row in drift["rows"]} if wanted <= settings else None


def drift_lines(node: Node) -> list[str]:
    """`balancer ha status`'s drift part on ``node``."""
    done = node.cli("ha", "status")
    assert done.returncode == 0, done.stdout + done.stderr
    said = done.stdout.splitlines()
    first = next(i for i, line in enumerate(said) if line.startswith("drift: "))
    rest = itertools.takewhile(lambda line: line.startswith("  "), said[first + 1 :])
    return [said[first], *rest]


def test_two_nodes_alike_but_for_the_hostname_they_share(pair: Topology) -> None:
    rows: dict[str, Any] = wait_for(
        "the Primary comparing both nodes", lambda: compared(pair.primary)
    )
    hostname = rows["hostname"]
    assert hostname["differs"], "both nodes run on this machine's hostname"
    assert hostname["this"] == hostname["peer"]
    routes = [f"route to {address}" for address in PSM_ADDRESSES.values()]
    agreeing = ["DNS resolvers", "MTU", "engine", "workers", "Balancer version", "clock offset"]
    for setting in agreeing + routes:
        assert not rows[setting]["differs"], rows[setting]
    for route in routes:
        assert rows[route]["this"] == "on-link (eth0)"
    # One kernel: its clock's state is the same on both, whatever it is.
    clock = rows["time synchronisation"]
    assert clock["this"] == clock["peer"]
    said = drift_lines(pair.primary)
    assert f"  hostname: this node {hostname['this']}; peer {hostname['peer']} (" in said[1]
    assert not any(line.startswith("  workers:") for line in said)


def test_changing_a_node_setting_on_one_node_shows_up_as_a_difference(pair: Topology) -> None:
    secondary = pair.secondary
    secondary.stop()
    with Store(secondary.data_dir / "balancer.db") as store:
        node = store.node_settings()
        assert node.workers == 1
        store.save_node_settings(node.model_copy(update={"workers": 2}), author="tester")
    secondary.start()

    def workers_differ() -> list[str] | None:
        rows = compared(pair.primary)
        if rows is None or not rows["workers"]["differs"]:
            return None
        return drift_lines(pair.primary)

    said: list[str] = wait_for("the Primary to see the Secondary's workers", workers_differ)
    assert "  workers: this node 1; peer 2 (the same capacity after a failover)" in said, "\n".join(
        said
    )
    # And the Secondary, the other way round.
    wait_for(
        "the Secondary to see the Primary's workers",
        lambda: (
            "  workers: this node 2; peer 1 (the same capacity after a failover)"
            in drift_lines(secondary)
        ),
    )
