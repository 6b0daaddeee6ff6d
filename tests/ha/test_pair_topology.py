"""The pair's topology (``tests.ha.cluster``) tells the truth and leaves nothing behind: a
session through a VIP is carried by the node that holds it and reaches a lab PSM server, and
when the block fails every namespace and every process it started is gone."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.ha.cluster import PSM_ADDRESSES, RDP_VIP, WEB_VIP, topology
from tests.netns import ip, needs_netns


class Failed(Exception):
    pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@needs_netns
def test_a_session_is_told_apart_by_node_and_psm_and_nothing_outlives_a_failure(
    tmp_path: Path,
) -> None:
    started: dict[str, list[Any]] = {}
    with pytest.raises(Failed):
        _fail_after_a_session(tmp_path, started)
    listed = ip("netns", "list")
    assert [name for name in started["namespaces"] if name in listed] == []
    assert [pid for pid in started["processes"] if _alive(pid)] == []


def _fail_after_a_session(root: Path, started: dict[str, list[Any]]) -> None:
    with topology(root) as pair:
        started["namespaces"] = [host.name for host in pair.net.hosts] + [pair.net.switch]
        processes = [p.pid for host in pair.net.hosts for p in host.processes]
        processes += [pid for node in pair.nodes if (pid := node.engine_pid()) is not None]
        started["processes"] = processes
        first, second = pair.nodes
        pair.commit_psm(first)
        pair.commit_psm(second)
        # Standalone nodes hold no VIP: given to the second by hand, it carries the session.
        for vip in (RDP_VIP, WEB_VIP):
            ip("-n", second.host.name, "addr", "add", f"{vip}/32", "dev", "eth0")
        assert pair.owner() is second
        with pair.client.open() as session:
            assert session.server in PSM_ADDRESSES
            assert pair.carrier(session) is second
        pair.client.watch()
        seen = pair.client.first_success_after(0)
        assert pair.through(seen) is second
        raise Failed
