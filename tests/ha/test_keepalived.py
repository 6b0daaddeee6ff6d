"""keepalived for the pair: the configuration as rendered, what ``keepalived -t`` refuses, and
two nodes in network namespaces whose floating IP moves when a link is cut, an engine dies or
keepalived stops, each reported through the notify FIFO.

Set ``BALANCER_GOLDEN=write`` to rewrite the golden file from the renderer, then read the diff.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from subprocess import Popen
from typing import Any

import pytest

from balancer.ha import role
from balancer.ha.keepalived import (
    KEEPALIVED,
    PROFILES,
    EngineCheck,
    Keepalived,
    KeepalivedError,
    Settings,
    render,
)
from tests.netns import Host, needs_netns, network

GOLDEN = Path(__file__).parent / "golden"
needs_keepalived = pytest.mark.skipif(
    shutil.which(KEEPALIVED) is None, reason="keepalived is not installed (make system installs it)"
)
VIP = "198.18.1.10"
PORT = 7000
WAIT = 15.0  # bound on every wait for keepalived; a move takes about a second

SETTINGS = Settings(
    interface="eth0",
    local="198.18.0.11",
    peer="198.18.0.12",
    vips=(VIP, "198.18.1.11/15", "2001:db8::10"),
    check=EngineCheck(("/usr/lib/balancer/engine-check", "--port", "7000")),
    fifo=Path("/run/balancer/keepalived.fifo"),
)


def test_render_matches_the_golden_file() -> None:
    rendered = render(SETTINGS)
    golden = GOLDEN / "keepalived.conf"
    if os.environ.get("BALANCER_GOLDEN") == "write":
        golden.write_text(rendered)
    assert rendered == golden.read_text(), "keepalived.conf changed; BALANCER_GOLDEN=write"


def test_preemption_and_the_conservative_profile_are_settings() -> None:
    rendered = render(replace(SETTINGS, preempt=True, advert=PROFILES["conservative"]))
    assert "nopreempt" not in rendered
    assert "    advert_int 1\n" in rendered
    assert "    advert_int 0.35\n" in render(replace(SETTINGS, advert=0.35))


def test_with_no_floating_ip_of_its_family_the_instance_holds_an_unreachable_one() -> None:
    placeholder = "        127.255.255.254/32 dev lo no_track\n"
    assert placeholder in render(replace(SETTINGS, vips=()))
    ipv6_only = render(replace(SETTINGS, vips=("2001:db8::10",)))
    assert placeholder in ipv6_only
    assert "    virtual_ipaddress_excluded {\n        2001:db8::10/128 dev eth0\n" in ipv6_only
    assert placeholder not in render(SETTINGS)
    ipv6_pair = replace(SETTINGS, local="2001:db8::11", peer="2001:db8::12", vips=())
    assert "        fe80::ba1a:ce/128 dev lo no_track\n" in render(ipv6_pair)


@needs_keepalived
def test_keepalived_takes_the_rendered_configuration_with_its_split_brain_healing(
    tmp_path: Path,
) -> None:
    """The owner that hears the other owner announces itself again; the other advertises once
    before it yields (keepalived.conf(5)); keepalived -t (Debian's 2.2.7) says nothing of it."""
    settings = replace(SETTINGS, check=EngineCheck(("/usr/bin/true",)), fifo=tmp_path / "fifo")
    rendered = render(settings)
    for line in ("garp_lower_prio_repeat 3", "garp_lower_prio_delay 1", "higher_prio_send_advert"):
        assert f"\n    {line}" in rendered
    config = tmp_path / "keepalived.conf"
    config.write_text(rendered)
    asyncio.run(Keepalived(tmp_path).check(config))
    config.write_text(rendered.replace("higher_prio_send_advert", "higher_prio_send_adver"))
    with pytest.raises(KeepalivedError, match="Unknown keyword 'higher_prio_send_adver'"):
        asyncio.run(Keepalived(tmp_path).check(config))


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"advert": 0.005}, "advert: 0.005 s must be between 0.01 and 40.95 s"),
        ({"advert": 0.255}, "advert: 0.255 s must be between"),
        ({"peer": "198.18.0.11"}, "peer: 198.18.0.11 is this node's own address"),
        ({"peer": "2001:db8::2"}, "peer: 2001:db8::2 is not of the same family"),
        ({"local": "node1"}, "local: 'node1' is not an IP address"),
        ({"vips": (VIP, f"{VIP}/15")}, "vips: 198.18.1.10/15 is given twice"),
        ({"vips": ("198.18.1.300",)}, "vips: '198.18.1.300' is not an IP address"),
        ({"interface": "eth0 x"}, "interface: 'eth0 x' is not an interface name"),
        ({"fifo": Path("notify")}, "fifo: notify must be an absolute path"),
        ({"priority": 255}, "priority: 255 must be between 1 and 254"),
        ({"router": 0}, "router: 0 must be between 1 and 255"),
    ],
)
def test_settings_refuse_what_keepalived_would_misread(change: dict[str, Any], error: str) -> None:
    with pytest.raises(ValueError, match=error.replace("(", r"\(")):
        replace(SETTINGS, **change)


@pytest.mark.parametrize(
    ("command", "error"),
    [
        (("check",), "must start with an absolute path"),
        (("/bin/sh", "-c", "exit 1"), "'exit 1' has a space"),
        (("/bin/check", '"x"'), "has a space, quote"),
    ],
)
def test_the_engine_check_is_words_keepalived_passes_as_they_are(
    command: tuple[str, ...], error: str
) -> None:
    with pytest.raises(ValueError, match=error):
        EngineCheck(command)


@needs_keepalived
def test_keepalived_t_complaints_become_one_line(tmp_path: Path) -> None:
    config = tmp_path / "keepalived.conf"
    config.write_text("vrrp_instance balancer {\n    advert_int 0.2x\n    nopreemptx\n}\n")
    with pytest.raises(KeepalivedError) as refused:
        asyncio.run(Keepalived(tmp_path).check(config))
    message = str(refused.value)
    assert message.startswith("keepalived refused its configuration: line 2: invalid number '0.2x'")
    assert "line 3: Unknown keyword 'nopreemptx'" in message
    assert "\n" not in message
    with pytest.raises(KeepalivedError, match="does not exist"):
        asyncio.run(Keepalived(tmp_path).check(tmp_path / "missing.conf"))


# A stand-in engine: answers every connection with its node's name.
STANDIN = """
import socket, sys
server = socket.create_server(("0.0.0.0", int(sys.argv[2])))
while True:
    connection, _ = server.accept()
    connection.sendall(sys.argv[1].encode())
    connection.close()
"""
# Connects to the VIP again and again from a client: says which node answered first, then
# when (time.monotonic, the same clock as the test's) the node it waits for answered.
PROBE = """
import socket, sys, time
vip, port, want = sys.argv[1], int(sys.argv[2]), sys.argv[3]
deadline = time.monotonic() + float(sys.argv[4])
ready = False
while time.monotonic() < deadline:
    try:
        with socket.create_connection((vip, port), timeout=0.1) as connection:
            answer = connection.recv(64).decode()
    except OSError:
        time.sleep(0.01)
        continue
    if not ready:
        print("ready", answer, flush=True)
        ready = True
    if answer == want:
        print("moved", time.monotonic(), flush=True)
        sys.exit(0)
    time.sleep(0.01)
print("gave up", flush=True)
"""
CHECK = """#!/bin/sh
# The engine answers when its port on this node takes a connection.
exec /usr/bin/timeout 1 /bin/bash -c "exec 3<>/dev/tcp/127.0.0.1/$1"
"""


@dataclass
class Node:
    name: str
    host: Host
    keepalived: Keepalived
    engine: Popen[bytes]
    changes: list[role.Change] = field(default_factory=list)

    def word(self) -> str | None:
        return self.changes[-1].after.word if self.changes else None

    def start_engine(self) -> None:
        self.engine = self.host.popen(sys.executable, "-c", STANDIN, self.name, str(PORT))


async def until(what: str, ready: Callable[[], bool]) -> None:
    """Wait, at most WAIT seconds, for ``ready()``."""
    for _ in range(int(WAIT / 0.05)):
        if ready():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@contextlib.asynccontextmanager
async def pair(tmp_path: Path) -> AsyncIterator[tuple[Node, Node, Host]]:
    """Two nodes with a stand-in engine and keepalived each, and a client; yields the node
    that holds the VIP, the other, and the client. All of it is gone afterwards."""
    script = tmp_path / "engine-check"  # keepalived runs it only from a directory root owns
    script.write_text(CHECK)
    script.chmod(0o755)
    with network() as net:
        client = net.host("client", "198.18.0.20")
        addresses = ["198.18.0.11", "198.18.0.12"]
        nodes: list[Node] = []
        following: list[asyncio.Task[None]] = []
        try:
            for number, (local, peer) in enumerate(
                zip(addresses, reversed(addresses), strict=True)
            ):
                host = net.host(f"n{number + 1}", local)
                directory = tmp_path / host.name
                engine = host.popen(sys.executable, "-c", STANDIN, f"n{number + 1}", str(PORT))
                keepalived = Keepalived(directory, wrap=host.command())
                node = Node(f"n{number + 1}", host, keepalived, engine)
                nodes.append(node)
                settings = replace(
                    SETTINGS,
                    local=local,
                    peer=peer,
                    vips=(VIP,),
                    check=EngineCheck((str(script), str(PORT))),
                    fifo=directory / "notify",
                )
                await node.keepalived.configure(settings)
                follow = role.follow(
                    settings.fifo, keepalived_log=keepalived.log, silence=settings.silence
                )
                following.append(asyncio.create_task(_collect(follow, node.changes)))
                await node.keepalived.start()
            await until("the VIP on one node", lambda: _owners(nodes) == 1)
            first, second = nodes
            owner, other = (first, second) if VIP in first.host.addresses() else (second, first)
            await until("keepalived's reports", _words(owner, "MASTER", other, "BACKUP"))
            yield owner, other, client
        finally:
            for node in nodes:
                await node.keepalived.stop()
            for task in following:
                task.cancel()
            await asyncio.gather(*following, return_exceptions=True)


async def _collect(follow: AsyncIterator[role.Change], changes: list[role.Change]) -> None:
    async for change in follow:
        changes.append(change)


def _words(first: Node, word: str, second: Node, other: str) -> Callable[[], bool]:
    return lambda: (first.word(), second.word()) == (word, other)


def _owners(nodes: list[Node]) -> int:
    return sum(VIP in node.host.addresses() for node in nodes)


async def _probe(client: Host, want: str, current: str) -> asyncio.subprocess.Process:
    """A client connecting to the VIP, once it has reached ``current`` there."""
    probe = await asyncio.create_subprocess_exec(
        *client.command(sys.executable, "-c", PROBE, VIP, str(PORT), want, str(WAIT)),
        stdout=asyncio.subprocess.PIPE,
    )
    assert probe.stdout is not None
    ready = await asyncio.wait_for(probe.stdout.readline(), WAIT)
    assert ready.decode().split() == ["ready", current]
    return probe


async def _moved(probe: asyncio.subprocess.Process, since: float, what: str) -> float:
    """Seconds from ``since`` to the client's first answer from the new owner; printed."""
    assert probe.stdout is not None
    said = (await asyncio.wait_for(probe.stdout.readline(), WAIT + 5)).decode().split()
    await probe.wait()
    assert said[:1] == ["moved"], f"the VIP did not answer from the other node: {said}"
    seconds = float(said[1]) - since
    print(f"{what}: the VIP answered from the other node {seconds:.3f} s later")
    return seconds


@needs_netns
@needs_keepalived
@pytest.mark.slow
def test_a_cut_link_moves_the_vip_and_a_healed_node_stays_passive(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with pair(tmp_path) as (owner, other, client):
            probe = await _probe(client, other.name, owner.name)
            cut = time.monotonic()
            owner.host.cut()
            await _moved(probe, cut, "link cut")
            await until("FAULT and MASTER", _words(owner, "FAULT", other, "MASTER"))
            assert owner.changes[-1].after.state is role.State.FAULT
            assert owner.changes[-1].after.reason == "link eth0 is down"
            assert other.changes[-1].after.state is role.State.ACTIVE
            silent = f"the peer went silent (no advert for {SETTINGS.silence:.2f} s)"
            assert other.changes[-1].after.reason == silent
            assert VIP not in owner.host.addresses()
            owner.host.heal()
            await until("the healed node's report", lambda: owner.word() == "BACKUP")
            assert owner.changes[-1].after.reason == "link eth0 is up again"
            await asyncio.sleep(1.0)  # a few adverts: without nopreempt it would take over
            assert (owner.word(), other.word()) == ("BACKUP", "MASTER")
            assert VIP in other.host.addresses()
            assert VIP not in owner.host.addresses()

    asyncio.run(scenario())


@needs_netns
@needs_keepalived
@pytest.mark.slow
def test_a_dead_engine_gives_the_vip_up_and_a_restarted_one_is_ready_again(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        async with pair(tmp_path) as (owner, other, client):
            probe = await _probe(client, other.name, owner.name)
            died = time.monotonic()
            owner.engine.kill()
            await _moved(probe, died, "engine death")
            await until("FAULT and MASTER", _words(owner, "FAULT", other, "MASTER"))
            assert owner.changes[-1].after.reason == (
                "the engine is not answering (its check exited with status 1)"
            )
            assert other.changes[-1].after.reason == "the peer gave the floating IPs up"
            assert VIP not in owner.host.addresses()
            owner.start_engine()
            await until("the engine check passing again", lambda: owner.word() == "BACKUP")
            assert owner.changes[-1].after.reason == "the engine answers again"
            assert VIP in other.host.addresses()

    asyncio.run(scenario())


@needs_netns
@needs_keepalived
@pytest.mark.slow
def test_a_reload_keeps_the_vip_and_a_stop_hands_it_over(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with pair(tmp_path) as (owner, other, client):
            before = len(owner.changes)
            owner.keepalived.reload()
            await asyncio.sleep(1.0)  # several adverts: a reload that dropped it would show
            assert len(owner.changes) == before
            assert VIP in owner.host.addresses()
            probe = await _probe(client, other.name, owner.name)
            stopped = time.monotonic()
            await owner.keepalived.stop()
            await _moved(probe, stopped, "keepalived stopped")
            await until("STOP and MASTER", _words(owner, "STOP", other, "MASTER"))
            assert owner.changes[-1].after.reason == "keepalived stopped"
            assert other.changes[-1].after.reason == "the peer gave the floating IPs up"
            assert VIP not in owner.host.addresses()
            assert not owner.keepalived.running()

    asyncio.run(scenario())


@needs_netns
@needs_keepalived
def test_a_refused_configuration_leaves_the_one_in_place(tmp_path: Path) -> None:
    async def scenario() -> None:
        with network() as net:
            host = net.host("n1", "198.18.0.11")
            keepalived = Keepalived(tmp_path / "n1", wrap=host.command())
            settings = replace(
                SETTINGS, check=EngineCheck(("/bin/true",)), fifo=tmp_path / "n1" / "notify"
            )
            await keepalived.configure(settings)
            accepted = keepalived.config.read_text()
            with pytest.raises(KeepalivedError, match=r"interface eth9 .* doesn't exist"):
                await keepalived.configure(replace(settings, interface="eth9"))
            assert keepalived.config.read_text() == accepted
            assert sorted(p.name for p in keepalived.directory.iterdir()) == [
                "keepalived.conf",
                "notify",
            ]

    asyncio.run(scenario())


@needs_netns
@needs_keepalived
def test_a_supervisor_learns_that_keepalived_died(tmp_path: Path) -> None:
    async def scenario() -> None:
        with network() as net:
            host = net.host("n1", "198.18.0.11")
            keepalived = Keepalived(tmp_path / "n1", wrap=host.command())
            settings = replace(
                SETTINGS, check=EngineCheck(("/bin/true",)), fifo=tmp_path / "n1" / "notify"
            )
            await keepalived.configure(settings)
            await keepalived.start()
            assert keepalived.running()
            pid = keepalived.pid()
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            said = await asyncio.wait_for(keepalived.wait(), WAIT)
            assert said.startswith("keepalived exited with status -9: ")
            assert not keepalived.running()

    asyncio.run(scenario())
