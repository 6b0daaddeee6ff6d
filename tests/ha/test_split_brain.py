"""Split brain end to end (issue 13): the pair of tests.ha.cluster, on each engine, cut off from
each other while both stay up (``Topology.partition``: IP between the two node addresses is
dropped, ARP and the clients' traffic go on). Both take the VIP; the alarm is raised on a
node's status (the pair view of GET /api/v1/ha, ``balancer ha status``), audited; after the
heal the Primary alone owns the VIP (keepalived's rule), the client reaches it, and the alarm
clears. Then a hung Active node (keepalived, the engine and the management service frozen):
its kernel still answers for the VIP, the other node takes it too and raises the alarm; once
it resumes, the Primary alone owns the VIP; unless it froze during its engine check, which
then fails: the Primary gives the VIP up on resume and the Secondary keeps it. The freeze is
placed against the check either way (``hung``). The times are printed (the goals: raised
within 3 s of both holding, one owner within 5 s of the heal).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from balancer.ha.keepalived import KEEPALIVED
from tests.ha.cluster import RDP_VIP, Node, Topology, topology, wait_for
from tests.netns import ip, needs_netns

needs_keepalived = pytest.mark.skipif(
    shutil.which(KEEPALIVED) is None, reason="keepalived is not installed (make system installs it)"
)
pytestmark = [needs_netns, needs_keepalived, pytest.mark.slow]


@pytest.fixture(scope="module", params=["builtin", "haproxy"])
def pair(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Topology]:
    """The pair with the PSM preset, one per engine for the module: each test leaves the
    Primary Active and the Secondary Passive."""
    engine: str = request.param
    with topology(tmp_path_factory.mktemp(f"split-{engine}"), engine, sources=0) as running:
        running.pair_with_psm()
        yield running


def alarm(node: Node) -> dict[str, Any] | None:
    """The split-brain alarm on ``node``'s status while it is raised."""
    view = node.pair_view()
    found = None if view is None else view.get("split_brain")
    return found if found is not None and found["raised"] else None


def test_a_partition_raises_the_alarm_and_the_heal_leaves_the_primary_alone(
    pair: Topology,
) -> None:
    primary, secondary = pair.primary, pair.secondary
    assert pair.settled() is primary
    pair.partition()
    try:
        wait_for("both nodes holding the VIP", lambda: len(pair.owners(RDP_VIP)) == 2)
        both = time.monotonic()
        raised: list[Node] = wait_for(
            "the split-brain alarm on a node", lambda: [n for n in pair.nodes if alarm(n)]
        )
        detected = time.monotonic() - both
        node = raised[0]
        shown = alarm(node)
        assert shown is not None
        other = pair.other(node)
        assert f"{RDP_VIP} answered from {other.mac} as well as this node" in shown["evidence"]
        status = node.cli("ha", "status")
        assert "SPLIT BRAIN: both nodes hold the floating IPs since " in status.stdout
        assert f"  {RDP_VIP} answered from {other.mac} as well as this node" in status.stdout
        audited = node.client.get("/audit", author="system")
        assert any(entry["action"] == "split_brain" for entry in audited)
    finally:
        pair.heal_partition()
    healed = time.monotonic()
    pair.taken_by(primary)
    resolved = time.monotonic() - healed
    print(
        f"{pair.engine}: split brain raised on {', '.join(n.label for n in raised)} "
        f"{detected:.2f} s after both held {RDP_VIP}; one owner {resolved:.2f} s after the heal"
    )
    # The winner announced itself again: the client's next connection goes to it.
    reached_through(pair, primary)
    wait_for("the alarm cleared on both nodes", lambda: not any(alarm(n) for n in pair.nodes))
    cleared = time.monotonic() - healed
    print(f"{pair.engine}: the alarm cleared {cleared:.2f} s after the heal")
    assert secondary.state() == "passive"
    audited = node.client.get("/audit", author="system")
    assert any(entry["action"] == "split_brain_resolved" for entry in audited)
    # Nothing else moved: the Secondary stays Passive without preemption.
    time.sleep(1.0)
    assert pair.owners(RDP_VIP) == [primary]


# Tries at placing a freeze against the engine check (below): each fails with probability
# about the check's share of its one-second interval.
PLACINGS = 20
CHECK_TIMEOUT = 10.0  # bound on a check's run (its own limit is 0.5 s), and on waiting for one


def reached_through(pair: Topology, node: Node) -> None:
    """Wait until the client's next connection to the VIP goes through ``node``."""
    pair.client.watch(timeout=1.0)
    try:
        pair.first_through(node, time.monotonic())
    finally:
        pair.client.stop_watching()


def split_by_freezing(pair: Topology, *, mid_check: bool) -> float:
    """Freeze the Primary (``hung``) until both nodes hold the VIP and the Secondary raises the
    alarm, naming the Primary's MAC; the seconds from both holding to the alarm."""
    primary, secondary = pair.primary, pair.secondary
    with hung(primary, mid_check=mid_check):
        wait_for("both nodes holding the VIP", lambda: len(pair.owners(RDP_VIP)) == 2)
        both = time.monotonic()
        wait_for("the split-brain alarm on the Secondary", lambda: alarm(secondary))
        detected = time.monotonic() - both
        shown = alarm(secondary)
        assert shown is not None
        assert f"{RDP_VIP} answered from {primary.mac} as well as this node" in shown["evidence"]
    return detected


@contextlib.contextmanager
def hung(node: Node, mid_check: bool = False) -> Iterator[None]:
    """The whole node frozen (SIGSTOP) for the block, as a hung host is: keepalived, the engine
    and its workers, and the management service; its kernel goes on answering ARP.

    When it freezes matters. keepalived runs the engine check every second, and a check under
    way fails: the frozen engine does not answer it (on a host frozen whole, keepalived times
    it out once it resumes). So the freeze falls between two checks, or with ``mid_check``
    during one, which is left to fail while the rest is frozen."""
    engine = node.engine_pid()
    assert engine is not None
    keepalived = [_pid(node, "keepalived.pid"), _pid(node, "keepalived-vrrp.pid")]
    frozen: list[int] = []
    with node.paused():
        try:
            for _ in range(PLACINGS):
                if mid_check:
                    check = _running_check(node, keepalived)
                    frozen = _stop([*keepalived, engine, *_descendants(node, engine)])
                    if _exit_status(check) != 0:
                        break
                else:
                    frozen = _stop(keepalived)
                    if not _checks(node, keepalived):
                        frozen += _stop([engine, *_descendants(node, engine)])
                        break
                _resume(frozen)
                frozen = []
                time.sleep(0.05)
            else:
                raise AssertionError(f"no freeze of {node.label} fell as asked in {PLACINGS} tries")
            yield
        finally:
            _resume(frozen)


def _pid(node: Node, name: str) -> int:
    return int((node.data_dir / "keepalived" / name).read_text())


def _stop(pids: list[int]) -> list[int]:
    """Stop ``pids``; a new list of them, for the caller to add to (not ``pids`` itself)."""
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    return list(pids)


def _resume(pids: list[int]) -> None:
    for pid in reversed(pids):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


def _checks(node: Node, keepalived: list[int]) -> list[int]:
    """The engine checks keepalived's VRRP process has started and not yet reaped."""
    return _descendants(node, keepalived[1])


def _running_check(node: Node, keepalived: list[int]) -> int:
    """An engine check once it runs Python (forked but not yet started, it still says
    keepalived)."""
    deadline = time.monotonic() + CHECK_TIMEOUT
    while time.monotonic() < deadline:
        running = [pid for pid in _checks(node, keepalived) if _comm(pid).startswith("python")]
        if running:
            return running[0]
        time.sleep(0.002)
    raise AssertionError(f"no engine check ran on {node.label} in {CHECK_TIMEOUT} s")


def _exit_status(pid: int) -> int:
    """The wait status of ``pid`` once it has ended (its parent, stopped, has not reaped it)."""
    deadline = time.monotonic() + CHECK_TIMEOUT
    while time.monotonic() < deadline:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            return 0  # reaped before keepalived stopped: the check ended before the freeze
        if fields[0] == "Z":
            return int(fields[49])  # field 52 of proc(5), exit_code
        time.sleep(0.01)
    raise AssertionError(f"the engine check {pid} did not end in {CHECK_TIMEOUT} s")


def _pids(node: Node) -> list[int]:
    return [int(pid) for pid in ip("netns", "pids", node.host.name).split()]


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _descendants(node: Node, parent: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid in _pids(node):
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = Path(f"/proc/{pid}/stat").read_text()
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(pid)
    found, todo = [], [parent]
    while todo:  # bounded: each pid is visited once, and a namespace holds few
        for child in children.pop(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def test_a_hung_active_node_is_a_split_brain_and_the_primary_keeps_the_vip_on_resume(
    pair: Topology,
) -> None:
    primary, secondary = pair.primary, pair.secondary
    assert pair.settled() is primary
    detected = split_by_freezing(pair, mid_check=False)
    resumed = time.monotonic()
    pair.taken_by(primary)
    resolved = time.monotonic() - resumed
    wait_for("the alarm cleared on both nodes", lambda: not any(alarm(n) for n in pair.nodes))
    print(
        f"{pair.engine}: hung node: split brain raised on the Secondary {detected:.2f} s after "
        f"both held {RDP_VIP}; one owner {resolved:.2f} s after the resume"
    )
    reached_through(pair, primary)
    wait_for("the Secondary Passive", lambda: secondary.state() == "passive")


def test_a_primary_hung_during_its_engine_check_resumes_passive_and_the_secondary_keeps_the_vips(
    pair: Topology,
) -> None:
    """The check under way when the Primary froze has failed: on resume keepalived gives the
    VIPs up at once (Fault) and comes back Passive; the Secondary, yielding to the Primary's
    first advert, takes them back on its priority 0 and announces itself. One owner, the alarm
    clears, the clients follow the Secondary, and a switchover fails back."""
    primary, secondary = pair.primary, pair.secondary
    assert pair.settled() is primary
    split_by_freezing(pair, mid_check=True)
    resumed = time.monotonic()
    pair.taken_by(secondary)
    resolved = time.monotonic() - resumed
    wait_for("the alarm cleared on both nodes", lambda: not any(alarm(n) for n in pair.nodes))
    print(f"{pair.engine}: hung during its check: the Secondary alone {resolved:.2f} s after")
    reached_through(pair, secondary)
    wait_for("the Primary Passive", lambda: primary.state() == "passive")
    assert secondary.state() == "active"
    # Nothing else moved: the Primary does not preempt.
    time.sleep(1.0)
    assert pair.owners(RDP_VIP) == [secondary]
    switched = secondary.cli("ha", "switchover")
    assert switched.returncode == 0, switched.stderr
    pair.taken_by(primary)
    assert pair.settled() is primary
