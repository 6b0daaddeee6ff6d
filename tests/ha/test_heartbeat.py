"""Heartbeat: this node's keepalived at run time. The pure parts, then two nodes in network
namespaces, each with a real keepalived and a stand-in engine check that fails while its node's
``fail`` file exists: the floating IP moves on a cut link and on a failing engine, a new
Heartbeat adopts keepalived without moving it, stop hands it over, a switchover refuses no
connection, and every role change is published and audited with its reason."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from balancer.events import RoleChanged
from balancer.ha import role
from balancer.ha.keepalived import EngineCheck
from balancer.ha.role import State
from balancer.model import Config, Pair, VirtualService
from balancer.pair import heartbeat
from balancer.pair.heartbeat import Heartbeat, HeartbeatError
from tests.ha.test_keepalived import needs_keepalived
from tests.netns import Host, Network, needs_netns, network

RECORDED = Path(__file__).parent / "recorded"
VIP, VIP2 = "198.18.1.10", "198.18.1.11"
PRIMARY, SECONDARY, CLIENT = "198.18.0.11", "198.18.0.12", "198.18.0.20"
PORT = 7000
WAIT = 15.0  # bound on every wait for keepalived; a move takes about a second
STARTED = "keepalived started; listening for the peer"
GAVE_UP = "the peer gave the floating IPs up"


def pair_of(role_: str, preempt: bool = False) -> Pair:
    local, peer = (PRIMARY, SECONDARY) if role_ == "primary" else (SECONDARY, PRIMARY)
    return Pair(
        role=role_,  # type: ignore[arg-type]
        local_address=local,  # type: ignore[arg-type]
        peer_address=peer,  # type: ignore[arg-type]
        preempt=preempt,
    )


# The pure parts.


def test_the_interface_is_the_one_holding_the_local_address() -> None:
    recorded = (RECORDED / "ip-address.json").read_text()  # ip -j address show, in a namespace
    assert heartbeat.interface_of(recorded, "198.18.0.11") == "eth0"
    assert heartbeat.interface_of(recorded, "::1") == "lo"
    with pytest.raises(HeartbeatError, match=r"^pair.local_address: 198.18.0.99 is on no "):
        heartbeat.interface_of(recorded, "198.18.0.99")


def test_settings_follow_the_pair() -> None:
    check = EngineCheck(("/bin/true",))
    primary = heartbeat.settings(
        pair_of("primary"), "eth0", [VIP2, VIP, VIP2], check, Path("/run/notify")
    )
    assert (primary.priority, primary.router, primary.advert, primary.preempt) == (
        150,
        51,
        0.2,
        False,
    )
    assert (primary.local, primary.peer, primary.vips) == (PRIMARY, SECONDARY, (VIP, VIP2))
    secondary = heartbeat.settings(
        pair_of("secondary", preempt=True).model_copy(update={"advert_interval": 1.0}),
        "eth1",
        [],
        check,
        Path("/run/notify"),
    )
    assert (secondary.priority, secondary.advert, secondary.preempt) == (100, 1.0, True)
    assert (secondary.interface, secondary.vips) == ("eth1", ())


def test_the_floating_ips_are_the_virtual_services_distinct_addresses() -> None:
    def service(label: str, ip: str, port: int) -> VirtualService:
        return VirtualService.model_validate({"label": label, "ip": ip, "ports": str(port)})

    config = Config(
        virtual_services=(service("a", VIP2, 3389), service("b", VIP, 3389), service("c", VIP2, 22))
    )
    assert heartbeat.floating_ips(config) == (VIP, VIP2)
    assert heartbeat.floating_ips(Config()) == ()


def test_only_a_change_of_state_is_announced() -> None:
    before = role.Status(State.ACTIVE, "MASTER", "the peer went silent", 1.0)
    fault = role.Status(State.FAULT, "FAULT", "link eth0 is down", 2.0)
    assert heartbeat.announced(pair_of("secondary"), role.Change(before, fault)) == RoleChanged(
        role="secondary", state="fault", previous="active", reason="link eth0 is down", at=2.0
    )
    stopped = role.Status(State.FAULT, "STOP", "keepalived stopped", 3.0)
    assert heartbeat.announced(pair_of("secondary"), role.Change(fault, stopped)) is None


def test_the_saved_status_is_read_back_and_garbage_is_none(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    assert heartbeat.saved(path) is None
    status = role.Status(State.ACTIVE, "MASTER", "the peer went silent", 12.5)
    heartbeat._save(path, status)
    assert heartbeat.saved(path) == status
    path.write_text('{"state": "Busy"}')
    assert heartbeat.saved(path) is None


def test_a_keepalived_that_keeps_dying_is_restarted_ever_more_slowly_and_then_not() -> None:
    delays = [heartbeat._backoff(restarts) for restarts in range(1, heartbeat.RESTARTS + 1)]
    assert delays[:4] == [0.5, 1.0, 2.0, 4.0]
    assert max(delays) == heartbeat.BACKOFF_MAX
    assert sum(delays) < 300  # then Restart Heartbeat is the way back


def test_a_switchover_with_preemption_on_is_refused_in_one_line(tmp_path: Path) -> None:
    node = Heartbeat(
        tmp_path, pair_of("primary", preempt=True), print, Audits(), check=EngineCheck(("/x",))
    )
    with pytest.raises(HeartbeatError) as refused:
        asyncio.run(node.switchover())
    assert str(refused.value) == (
        "switchover: pair.preempt is on, so this node would take the floating IPs back at "
        "once; turn preemption off to switch over"
    )


# Two nodes in namespaces.


@dataclass
class Audits:
    entries: list[dict[str, Any]] = field(default_factory=list)

    def __call__(
        self, *, author: str, action: str, target: str = "", detail: dict[str, Any] | None = None
    ) -> None:
        self.entries.append(
            {"author": author, "action": action, "target": target, **(detail or {})}
        )


CHECK = """#!/bin/sh
# The engine answers unless this node's fail file exists.
exec /usr/bin/test ! -e "$1"
"""
# Answers every connection with its node's name: stands in for the engine on the VIP.
STANDIN = """
import socket, sys
server = socket.create_server(("0.0.0.0", int(sys.argv[2])))
while True:
    connection, _ = server.accept()
    connection.sendall(sys.argv[1].encode())
    connection.close()
"""
# Connects to the VIP again and again until the stop file exists; says who answered first,
# then, at the end, what it met.
PROBE = """
import json, os, socket, sys, time
vip, port, stop = sys.argv[1], int(sys.argv[2]), sys.argv[3]
deadline = time.monotonic() + float(sys.argv[4])
met = {"refused": 0, "timeouts": 0, "answers": []}
while time.monotonic() < deadline and not os.path.exists(stop):
    try:
        # Over a SYN retransmission: a takeover leaves the VIP unowned for about 0.1 s.
        with socket.create_connection((vip, port), timeout=3) as connection:
            answer = connection.recv(64).decode()
    except ConnectionRefusedError:
        met["refused"] += 1
        continue
    except OSError:
        met["timeouts"] += 1
        continue
    if not met["answers"]:  # what came before its engine listened is no failover's
        met["refused"] = met["timeouts"] = 0
        print("ready", answer, flush=True)
    if not met["answers"] or met["answers"][-1] != answer:
        met["answers"].append(answer)
    time.sleep(0.01)
print(json.dumps(met), flush=True)
"""


@dataclass
class Node:
    name: str
    host: Host
    pair: Pair
    data_dir: Path
    check: EngineCheck
    fail: Path
    published: list[RoleChanged] = field(default_factory=list)
    audits: Audits = field(default_factory=Audits)
    heartbeat: Heartbeat = field(init=False)

    def __post_init__(self) -> None:
        self.new_heartbeat()

    def new_heartbeat(self) -> Heartbeat:
        """A Heartbeat for this node, as a new run of the management service makes."""
        self.heartbeat = Heartbeat(
            self.data_dir,
            self.pair,
            self.published.append,
            self.audits,
            wrap=self.host.command(),
            check=self.check,
        )
        return self.heartbeat

    def state(self) -> State:
        return self.heartbeat.status().state

    def holds(self, vip: str = VIP) -> bool:
        return vip in self.host.addresses()

    def last(self) -> RoleChanged:
        return self.published[-1]


async def until(what: str, ready: Callable[[], bool]) -> None:
    """Wait, at most WAIT seconds, for ``ready()``."""
    for _ in range(int(WAIT / 0.05)):
        if ready():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _node(net: Network, tmp_path: Path, script: Path, name: str, pair: Pair) -> Node:
    host = net.host(name, str(pair.local_address))
    data_dir = tmp_path / name
    data_dir.mkdir()
    fail = data_dir / "fail"
    return Node(name, host, pair, data_dir, EngineCheck((str(script), str(fail))), fail)


@contextlib.asynccontextmanager
async def two_nodes(
    tmp_path: Path, vips: tuple[str, ...] = (VIP,)
) -> AsyncIterator[tuple[Node, Node, Host]]:
    """The Primary and the Secondary, started in that order, and a client; yields the node
    that holds the floating IPs, the other, and the client. All of it is gone afterwards."""
    script = tmp_path / "engine-check"  # keepalived runs it only from a directory root owns
    script.write_text(CHECK)
    script.chmod(0o755)
    with network() as net:
        client = net.host("client", CLIENT)
        nodes = [
            _node(net, tmp_path, script, "n1", pair_of("primary")),
            _node(net, tmp_path, script, "n2", pair_of("secondary")),
        ]
        try:
            for node in nodes:
                await node.heartbeat.start(vips)
                # keepalived has reported as it started: Passive, listening for the peer.
                assert node.published[0] == RoleChanged(
                    node.pair.role, "passive", "unknown", STARTED, node.published[0].at
                )
            await until(
                "one node Active, the other Passive",
                lambda: sorted(node.state() for node in nodes) == [State.ACTIVE, State.PASSIVE],
            )
            owner, other = nodes if nodes[0].state() is State.ACTIVE else nodes[::-1]
            yield owner, other, client
        finally:
            for node in nodes:
                await node.heartbeat.stop()


def _audited(node: Node) -> list[tuple[str, str, str]]:
    """(state, previous, reason) of each role change audited on ``node``; they must be
    ``system``'s ``role_changed`` entries with the node's role as target."""
    for entry in node.audits.entries:
        assert (entry["author"], entry["action"], entry["target"]) == (
            "system",
            "role_changed",
            node.pair.role,
        )
    return [(e["state"], e["previous"], e["reason"]) for e in node.audits.entries]


def _said(node: Node) -> list[tuple[str, str, str]]:
    return [(event.state, event.previous, event.reason) for event in node.published]


@needs_netns
@needs_keepalived
@pytest.mark.slow
def test_a_cut_link_moves_the_floating_ip_and_each_node_says_why(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with two_nodes(tmp_path) as (owner, other, _):
            assert owner.holds()
            assert not other.holds()
            owner.host.cut()
            await until("the other node Active", lambda: other.state() is State.ACTIVE)
            await until("the cut node in Fault", lambda: owner.state() is State.FAULT)
            assert owner.last().reason == "link eth0 is down"
            silence = other.last().reason
            assert silence.startswith("the peer went silent (no advert for 0.")
            assert other.holds()
            assert not owner.holds()
            owner.host.heal()
            await until("the healed node Passive", lambda: owner.state() is State.PASSIVE)
            assert owner.last().reason == "link eth0 is up again"
            assert other.holds()
            assert _said(owner) == _audited(owner)
            assert _said(other) == _audited(other)
            assert _said(owner) == [
                ("passive", "unknown", STARTED),
                ("active", "passive", owner.published[1].reason),
                ("fault", "active", "link eth0 is down"),
                ("passive", "fault", "link eth0 is up again"),
            ]
            assert _said(other)[-1] == ("active", "passive", silence)

    asyncio.run(scenario())


@needs_netns
@needs_keepalived
@pytest.mark.slow
def test_an_engine_that_stops_answering_gives_the_floating_ip_up(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with two_nodes(tmp_path) as (owner, other, _):
            owner.fail.touch()
            await until("the other node Active", lambda: other.state() is State.ACTIVE)
            await until("the failing node in Fault", lambda: owner.state() is State.FAULT)
            assert owner.last().reason == (
                "the engine is not answering (its check exited with status 1)"
            )
            assert other.last().reason == GAVE_UP
            await until("the VIP on the other node", lambda: other.holds() and not owner.holds())
            owner.fail.unlink()
            await until("the engine answering again", lambda: owner.state() is State.PASSIVE)
            assert owner.last().reason == "the engine answers again"
            assert other.holds()
            assert _said(owner) == _audited(owner)

    asyncio.run(scenario())


@needs_netns
@needs_keepalived
@pytest.mark.slow
def test_a_new_heartbeat_adopts_keepalived_and_moves_nothing(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with two_nodes(tmp_path) as (owner, other, _):
            pid = owner.heartbeat.keepalived.pid()
            assert pid is not None
            await owner.heartbeat.close()  # the management service restarts in place
            assert owner.heartbeat.keepalived.pid() == pid
            published = len(owner.published)
            adopting = owner.new_heartbeat()
            await adopting.start([VIP])
            assert adopting.keepalived.pid() == pid
            assert adopting.status().state is State.ACTIVE  # as the last Heartbeat saved it
            assert len(owner.published) == published
            assert other.state() is State.PASSIVE
            assert owner.holds()
            # A commit that adds a floating IP: a reload, and the owner holds both.
            assert await adopting.update([VIP, VIP2])
            assert not await adopting.update([VIP2, VIP])
            await until("the new VIP on the owner", lambda: owner.holds(VIP2))
            assert adopting.keepalived.pid() == pid
            assert owner.holds()
            assert len(owner.published) == published
            # The adopted keepalived is supervised too: killed, it is started again.
            os.kill(pid, signal.SIGKILL)
            await until(
                "keepalived started again",
                lambda: (
                    adopting.keepalived.pid() not in (None, pid)
                    and adopting.status().word in heartbeat.RUNNING
                ),
            )
            died = owner.published[published]
            assert (died.state, died.previous) == ("fault", "active")
            assert died.reason.startswith(f"keepalived (pid {pid}) ended: ")

    asyncio.run(scenario())


@needs_netns
@needs_keepalived
@pytest.mark.slow
def test_with_no_floating_ip_yet_keepalived_runs_and_takes_the_first_one(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with two_nodes(tmp_path, vips=()) as (owner, other, _):
            assert "127.255.255.254" in owner.host.run("ip", "-4", "addr", "show", "lo").stdout
            assert await owner.heartbeat.update([VIP])
            assert await other.heartbeat.update([VIP])
            await until("the VIP on the owner", owner.holds)
            assert not other.holds()

    asyncio.run(scenario())


@needs_netns
@needs_keepalived
@pytest.mark.slow
def test_stop_hands_the_floating_ip_over(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with two_nodes(tmp_path) as (owner, other, _):
            await owner.heartbeat.stop()
            assert not owner.heartbeat.keepalived.running()
            assert owner.last() == RoleChanged(
                owner.pair.role,
                "fault",
                "active",
                heartbeat.SHUTDOWN,
                owner.last().at,
            )
            await until("the other node Active", lambda: other.state() is State.ACTIVE)
            assert other.last().reason == GAVE_UP
            await until("the VIP on the other node", other.holds)
            assert not owner.holds()

    asyncio.run(scenario())


async def _probe(client: Host, stop: Path, owner: str) -> asyncio.subprocess.Process:
    """A client connecting to the VIP, once the owner has answered it there."""
    probe = await asyncio.create_subprocess_exec(
        *client.command(sys.executable, "-c", PROBE, VIP, str(PORT), str(stop), str(WAIT * 2)),
        stdout=asyncio.subprocess.PIPE,
    )
    assert probe.stdout is not None
    assert await asyncio.wait_for(probe.stdout.readline(), WAIT) == f"ready {owner}\n".encode()
    return probe


async def _met(probe: asyncio.subprocess.Process, stop: Path) -> dict[str, Any]:
    stop.touch()
    assert probe.stdout is not None
    met: dict[str, Any] = json.loads(await asyncio.wait_for(probe.stdout.readline(), WAIT * 3))
    await probe.wait()
    return met


@needs_netns
@needs_keepalived
@pytest.mark.slow
def test_a_switchover_refuses_no_connection_and_a_restart_moves_nothing(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with two_nodes(tmp_path) as (owner, other, client):
            for node in (owner, other):
                node.host.popen(sys.executable, "-c", STANDIN, node.name, str(PORT))
            stop = tmp_path / "stop-probe"
            probe = await _probe(client, stop, owner.name)
            await owner.heartbeat.switchover()
            assert owner.state() is State.PASSIVE  # it runs again, and stays Passive
            await until("the other node Active", lambda: other.state() is State.ACTIVE)
            await until("the VIP on the other node", lambda: other.holds() and not owner.holds())
            await asyncio.sleep(0.5)  # a few connections through the new owner
            met = await _met(probe, stop)
            print(f"switchover: {met}")
            assert met["refused"] == 0
            assert met["answers"][-1] == other.name
            assert _said(owner)[-2:] == [
                ("fault", "active", heartbeat.SWITCHOVER),
                ("passive", "fault", STARTED),
            ]
            assert other.last().reason == GAVE_UP
            with pytest.raises(HeartbeatError, match=r"^switchover: this node is Passive, so"):
                await owner.heartbeat.switchover()
            # Restart Heartbeat on the Passive node: keepalived anew, the VIP stays put.
            pid = owner.heartbeat.keepalived.pid()
            await owner.heartbeat.restart()
            assert owner.heartbeat.keepalived.pid() not in (None, pid)
            assert owner.state() is State.PASSIVE
            assert _said(owner)[-1] == ("passive", "fault", STARTED)
            assert ("fault", "passive", heartbeat.RESTART) in _said(owner)
            assert other.state() is State.ACTIVE
            assert other.holds()
            assert _said(owner) == _audited(owner)

    asyncio.run(scenario())
