"""The pair's HA settings (issue 12 item 1: the advert interval, with a conservative profile,
and preemption): changed by an operator on the Primary, applied on both nodes.

Two nodes' management applications, each with a real Cluster, Store and Controller (on the
tests' fake engine), served as the daemon serves them: on the front's HTTPS listener at
127.0.0.1 (the Primary) and 127.0.0.2 (the Secondary) with the pair's trust, and on a Unix
socket for the command line. keepalived is a fake Heartbeat that writes each reconfigure into a
list both nodes share. Then a real keepalived on each of two nodes in network namespaces:
a reconfigure reloads it with the new advert (the peer's keepalived says it learnt it) and moves
no floating IP, and one keepalived -t refuses changes nothing."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

import httpx
import pytest

from balancer import certificates
from balancer.app import create_app
from balancer.client import api_socket
from balancer.controller import Controller
from balancer.events import RoleChanged
from balancer.front.gate import local
from balancer.front.listeners import Listener, PairTLS, listener, network_socket, unix_socket
from balancer.ha import trust
from balancer.ha.role import State
from balancer.model import NodeSettings, Pair
from balancer.pair.cluster import Cluster, PairError
from balancer.pair.heartbeat import Audit, HeartbeatError
from balancer.store import Store
from balancer.validate import Invalid
from tests.ha.test_cluster import FakeHeartbeat
from tests.ha.test_heartbeat import PORT, STANDIN, _met, _probe, two_nodes
from tests.ha.test_keepalived import needs_keepalived
from tests.ha.test_trust import NOW, pair_node
from tests.netns import needs_netns
from tests.webapp import FakeEngine

PRIMARY = IPv4Address("127.0.0.1")
SECONDARY = IPv4Address("127.0.0.2")
TIMEOUT = 10.0  # a bound on waiting, not a measure
STEP = 0.01
CLI_TIMEOUT = 60.0


@dataclass
class Node:
    data_dir: Path
    store: Store
    cluster: Cluster
    api: httpx.AsyncClient  # its API as a local caller, user "ops"
    heartbeats: list[FakeHeartbeat]  # each its Cluster made
    silence: Callable[[], Awaitable[None]]  # its HTTPS port closes, as a node gone away

    @property
    def heartbeat(self) -> FakeHeartbeat:
        return self.heartbeats[-1]

    @property
    def pair(self) -> Pair:
        pair = self.store.node_settings().pair
        assert pair is not None
        return pair

    def saved(self) -> list[tuple[str, float | None]]:
        """Who saved this node's settings since the test began, and the advert they saved."""
        return [
            (e.author, (e.detail["settings"]["pair"] or {}).get("advert_interval"))
            for e in reversed(self.store.audit_log(100))
            if e.action == "node_settings" and e.author != "test"
        ]


@dataclass
class Two:
    primary: Node
    secondary: Node
    asked: list[str]  # what each node's keepalived was asked, in order

    @property
    def done(self) -> list[str]:
        """The reconfigures among them ("secondary 1 off"), which these tests are about."""
        return [line for line in self.asked if not line.startswith("this ")]


async def until(what: str, done: Callable[[], bool]) -> None:
    for _ in range(int(TIMEOUT / STEP)):
        if done():
            return
        await asyncio.sleep(STEP)
    raise AssertionError(f"never: {what}")


async def serve(
    stack: contextlib.AsyncExitStack, server: Listener, sock: socket.socket
) -> Callable[[], Awaitable[None]]:
    """Serve on ``sock`` until the stack closes; what stops it and closes ``sock`` sooner."""
    task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))

    async def stop() -> None:
        server.should_exit = True
        await task

    async def silence() -> None:
        server.force_exit = True  # the peer's connections are not waited for
        await stop()
        sock.close()  # else the kernel still completes connections no one answers

    stack.push_async_callback(stop)
    await until("listening", lambda: server.started)
    return silence


async def served(
    stack: contextlib.AsyncExitStack,
    data_dir: Path,
    sock: socket.socket,
    own: trust.Trust,
    pair: Pair | None,
    done: list[str],
    state: State,
) -> Node:
    """A node served as the daemon serves it: HTTPS on ``sock``, its API on its Unix socket."""
    store = stack.enter_context(Store(data_dir / "balancer.db"))
    store.save_node_settings(NodeSettings(pair=pair), author="test")
    controller = Controller(store, FakeEngine())
    await controller.start()
    stack.push_async_callback(controller.close, stop_engine=True)
    made: list[FakeHeartbeat] = []

    def heartbeat(
        data_dir: Path, pair: Pair, publish: Callable[[RoleChanged], None], audit: Audit
    ) -> FakeHeartbeat:
        made.append(FakeHeartbeat(data_dir, pair, publish, audit, done=done, state=state))
        return made[-1]

    tls = PairTLS()
    cluster = Cluster(store, controller, data_dir, heartbeat=heartbeat, secure=tls.set)
    app = create_app(store, controller, cluster, data_dir, lambda _: None, pair_tls=tls)
    address = sock.getsockname()[0]
    https = listener(app, certificates.certificate(data_dir / "webui.pem", f"node {address}"))
    https.config.load()
    assert https.config.ssl is not None
    tls.serve_on(https.config.ssl)
    if pair is not None:  # before either Cluster starts, so the peer is never refused
        tls.set(own, pair.peer_address)
    silence = await serve(stack, https, sock)
    await serve(stack, listener(local(app)), unix_socket(api_socket(data_dir)))
    api = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=local(app)),
        base_url="http://balancer/api/v1",
        headers={"X-Balancer-User": "ops"},
    )
    stack.push_async_callback(api.aclose)
    return Node(data_dir, store, cluster, api, made, silence)


@contextlib.asynccontextmanager
async def two(
    root: Path, primary: State = State.ACTIVE, *, paired: bool = True
) -> AsyncIterator[Two]:
    """The Primary in state ``primary`` and the Secondary in the other, each started as the
    daemon starts it; standalone both unless ``paired``."""
    authority = trust.make_ca(now=NOW)
    sockets = {address: network_socket(address, 0) for address in (PRIMARY, SECONDARY)}
    port = {address: sock.getsockname()[1] for address, sock in sockets.items()}
    done: list[str] = []
    other = State.PASSIVE if primary is State.ACTIVE else State.ACTIVE
    async with contextlib.AsyncExitStack() as stack:
        for sock in sockets.values():
            stack.callback(sock.close)
        nodes = []
        for role_, address, peer, state in (
            ("primary", PRIMARY, SECONDARY, primary),
            ("secondary", SECONDARY, PRIMARY, other),
        ):
            data_dir = root / role_
            own = pair_node(data_dir, authority, address)
            pair = Pair(
                role=role_,
                local_address=address,
                peer_address=peer,
                peer_port=port[peer],
            )
            given = pair if paired else None
            nodes.append(await served(stack, data_dir, sockets[address], own, given, done, state))
        for box in nodes:
            await box.cluster.start()
            stack.push_async_callback(box.cluster.stop)
        yield Two(nodes[0], nodes[1], done)


# --- the Cluster -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("primary", "order"),
    [
        # The Active node first: a Passive node reloaded to quicker adverts than the Active one
        # sends would take the floating IPs (measured with keepalived 2.2.7).
        (State.ACTIVE, ["primary 1 off", "secondary 1 off"]),
        (State.PASSIVE, ["secondary 1 off", "primary 1 off"]),
    ],
)
def test_configure_applies_the_settings_on_both_nodes_the_active_one_first(
    tmp_path: Path, primary: State, order: list[str]
) -> None:
    async def scenario() -> None:
        async with two(tmp_path, primary) as pair:
            said = await pair.primary.cluster.configure(1.0, False, author="alice")
            assert said == "advert interval 1 s, preemption off, on both nodes"
            assert pair.done == order
            for box in (pair.primary, pair.secondary):
                assert (box.pair.advert_interval, box.pair.preempt) == (1.0, False)
                assert box.heartbeat.pair == box.pair
            # Each node's change is audited, with who made it.
            assert pair.primary.saved() == [("alice", 1.0)]
            assert pair.secondary.saved() == [(f"peer {PRIMARY}", 1.0)]
            # The rest of each node's pair is as it was.
            assert pair.secondary.pair.peer_address == PRIMARY
            said = await pair.primary.cluster.configure(0.35, True, author="alice")
            assert said == "advert interval 0.35 s, preemption on, on both nodes"
            assert pair.done[2:] == [line.replace("1 off", "0.35 on") for line in order]
            assert pair.secondary.pair.preempt

    asyncio.run(scenario())


def test_a_new_replication_port_moves_both_nodes_engines_and_is_kept(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with two(tmp_path) as pair:
            said = await pair.primary.cluster.configure(
                0.2, False, author="alice", replication_port=7779
            )
            assert (
                said
                == "advert interval 0.2 s, preemption off, replication port 7779, on both nodes"
            )
            for box in (pair.primary, pair.secondary):
                assert box.pair.replication_port == 7779
                engine = box.cluster.controller.engine
                assert isinstance(engine, FakeEngine)
                told = engine.replicated[-1]
                assert told is not None
                assert (told.port, told.local, told.peer) == (
                    7779,
                    str(box.pair.local_address),
                    str(box.pair.peer_address),
                )

    asyncio.run(scenario())


def test_the_same_settings_again_put_a_secondary_right_and_change_nothing_here(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        async with two(tmp_path) as pair:
            said = await pair.primary.cluster.configure(0.2, False, author="alice")
            assert said == "advert interval 0.2 s, preemption off, on both nodes"
            assert pair.done == ["primary 0.2 off", "secondary 0.2 off"]
            assert pair.primary.saved() == []  # nothing changed here

    asyncio.run(scenario())


@pytest.mark.parametrize("primary", [State.ACTIVE, State.PASSIVE])
def test_an_unreachable_secondary_changes_nothing_on_either_node(
    tmp_path: Path, primary: State
) -> None:
    async def scenario() -> None:
        async with two(tmp_path, primary) as pair:
            before = (pair.primary.pair, pair.secondary.pair)
            await pair.secondary.silence()
            with pytest.raises(PairError) as refused:
                await pair.primary.cluster.configure(1.0, False, author="alice")
            where = f"{SECONDARY}:{pair.primary.pair.peer_port}"
            said = str(refused.value)
            assert said.startswith(f"cannot reach the peer at {where}: ")
            assert said.endswith(": nothing was changed on either node")
            assert "\n" not in said
            assert (pair.primary.pair, pair.secondary.pair) == before
            assert pair.primary.saved() == pair.secondary.saved() == []
            # The Active Primary took them first, and was put back.
            assert pair.done == (
                ["primary 1 off", "primary 0.2 off"] if primary is State.ACTIVE else []
            )
            assert pair.primary.heartbeat.pair == before[0]

    asyncio.run(scenario())


def test_a_secondary_whose_keepalived_refuses_changes_nothing_on_either_node(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        async with two(tmp_path) as pair:
            before = (pair.primary.pair, pair.secondary.pair)
            pair.secondary.heartbeat.refuse = "keepalived refused its configuration: line 22: no"
            with pytest.raises(PairError) as refused:
                await pair.primary.cluster.configure(1.0, False, author="alice")
            assert str(refused.value) == (
                f"the peer at {SECONDARY}:{pair.primary.pair.peer_port} refused PUT "
                "/api/v1/peer/settings: 409 keepalived refused its configuration: line 22: no: "
                "nothing was changed on either node"
            )
            assert (pair.primary.pair, pair.secondary.pair) == before
            assert pair.done == ["primary 1 off", "primary 0.2 off"]
            assert pair.primary.saved() == pair.secondary.saved() == []

    asyncio.run(scenario())


def test_a_second_change_while_one_is_under_way_is_refused_and_the_first_completes(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        async with two(tmp_path) as pair:
            first = asyncio.create_task(pair.primary.cluster.configure(1.0, False, author="alice"))
            # The Active Primary has reloaded; the Secondary is being asked over the link.
            await until("the first change under way", lambda: pair.done == ["primary 1 off"])
            with pytest.raises(PairError) as refused:
                await pair.primary.cluster.configure(0.5, True, author="bob")
            assert "a change of the HA settings is under way" in str(refused.value)
            assert await first == "advert interval 1 s, preemption off, on both nodes"
            assert pair.done == ["primary 1 off", "secondary 1 off"]
            assert (pair.secondary.pair.advert_interval, pair.secondary.pair.preempt) == (1, False)
            assert pair.primary.saved() == [("alice", 1.0)]

    asyncio.run(scenario())


def test_configure_is_refused_on_the_secondary_standalone_and_for_a_bad_value(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        async with two(tmp_path / "pair") as pair:
            with pytest.raises(PairError) as refused:
                await pair.secondary.cluster.configure(1.0, False, author="alice")
            assert str(refused.value) == (
                "this node is the Secondary of an HA pair: the pair's HA settings are changed "
                f"on the Primary at https://{PRIMARY}:{pair.secondary.pair.peer_port}"
            )
            with pytest.raises(Invalid) as invalid:
                await pair.primary.cluster.configure(0.015, False, author="alice")
            [problem] = invalid.value.problems
            assert problem.field == "advert_interval"
            assert problem.reason == "0.015 s must be in hundredths of a second"
            with pytest.raises(Invalid, match=r"^advert_interval: must be at most 40\.95"):
                await pair.primary.cluster.configure(41, False, author="alice")
            assert pair.done == []
        async with two(tmp_path / "alone", paired=False) as alone:
            with pytest.raises(PairError, match=r"^this node is not in a pair$"):
                await alone.primary.cluster.configure(1.0, False, author="alice")

    asyncio.run(scenario())


# --- the operator's API and command line -----------------------------------------------------


def test_the_api_shows_and_changes_the_settings_and_refuses_bad_input(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with two(tmp_path) as pair:
            api = pair.primary.api
            shown = (await api.get("/ha")).json()["settings"]
            assert shown == {
                "advert_interval": 0.2,
                "profile": "default",
                "preempt": False,
                "replication_port": 7778,
            }
            for body, field, reason in (
                ({"advert_interval": "soon"}, "advert_interval", "'soon' is not a number"),
                (
                    {"advert_interval": 0.001},
                    "advert_interval",
                    "must be at least 0.01, not 0.001",
                ),
                (
                    {"profile": "fast"},
                    "profile",
                    "must be 'default' or 'conservative', not 'fast'",
                ),
                (
                    {"profile": "default", "advert_interval": 0.3},
                    "profile",
                    "give a profile or advert_interval, not both",
                ),
                ({"preempt": "perhaps"}, "preempt", "must be true or false, not 'perhaps'"),
                ({"advert": 1}, "advert", "is not a known setting"),
                (
                    {"replication_port": 70000},
                    "replication_port",
                    "must be at most 65535, not 70000",
                ),
            ):
                answer = await api.patch("/ha", json=body)
                assert answer.status_code == 422, body
                assert answer.json()["detail"] == [{"field": field, "reason": reason}], body
            assert pair.done == []
            answer = await api.patch("/ha", json={"profile": "conservative"})
            assert answer.status_code == 200, answer.text
            assert answer.json() == {
                "message": "advert interval 1 s, preemption off, on both nodes",
                "settings": {
                    "advert_interval": 1.0,
                    "profile": "conservative",
                    "preempt": False,
                    "replication_port": 7778,
                },
            }
            # What is not given stays as it is.
            answer = await api.patch("/ha", json={"preempt": True})
            assert answer.json()["settings"] == {
                "advert_interval": 1.0,
                "profile": "conservative",
                "preempt": True,
                "replication_port": 7778,
            }
            answer = await api.patch("/ha", json={"advert_interval": 0.5})
            assert answer.json()["settings"]["profile"] is None
            assert pair.primary.saved() == [("ops", 1.0), ("ops", 1.0), ("ops", 0.5)]
            shown = (await pair.secondary.api.get("/ha")).json()["settings"]
            assert shown == {
                "advert_interval": 0.5,
                "profile": None,
                "preempt": True,
                "replication_port": 7778,
            }
            refused = await pair.secondary.api.patch("/ha", json={"profile": "default"})
            assert refused.status_code == 409
            [problem] = refused.json()["detail"]
            assert problem["reason"].endswith(
                f"changed on the Primary at https://{PRIMARY}:{pair.secondary.pair.peer_port}"
            )
        async with two(tmp_path / "alone", paired=False) as alone:
            refused = await alone.primary.api.patch("/ha", json={"profile": "default"})
            assert refused.status_code == 409
            assert refused.json()["detail"] == [
                {"field": "", "reason": "this node is not in a pair"}
            ]
            assert (await alone.primary.api.get("/ha")).json()["settings"] is None

    asyncio.run(scenario())


async def balancer(box: Node, *args: str) -> tuple[int, str, str]:
    """The command line on ``box``'s data directory: exit status, stdout, stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "balancer",
        *args,
        env={**os.environ, "BALANCER_DIR": str(box.data_dir)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), CLI_TIMEOUT)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def test_the_command_line_sets_the_settings_on_the_primary(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with two(tmp_path) as pair:
            done = await balancer(pair.primary, "ha", "set", "--profile", "conservative")
            assert done == (0, "advert interval 1 s, preemption off, on both nodes\n", "")
            done = await balancer(pair.primary, "ha", "set", "--advert", "0.3", "--preempt")
            assert done == (0, "advert interval 0.3 s, preemption on, on both nodes\n", "")
            assert (pair.secondary.pair.advert_interval, pair.secondary.pair.preempt) == (0.3, True)
            status, out, _ = await balancer(pair.secondary, "ha", "status")
            assert status == 0
            assert out.splitlines()[-1] == (
                "settings: advert interval 0.3 s, preemption on, replication port 7778"
            )
            refused = await balancer(pair.primary, "ha", "set", "--advert", "0.015")
            assert refused == (
                1,
                "",
                "error: advert_interval: 0.015 s must be in hundredths of a second\n",
            )
            refused = await balancer(pair.secondary, "ha", "set", "--no-preempt")
            assert refused[0] == 1
            assert refused[2] == (
                "error: this node is the Secondary of an HA pair: the pair's HA settings are "
                f"changed on the Primary at https://{PRIMARY}:{pair.secondary.pair.peer_port}\n"
            )
            nothing = await balancer(pair.primary, "ha", "set")
            assert nothing == (
                2,
                "",
                "error: give --profile, --advert, --preempt, --no-preempt or --replication-port\n",
            )
            assert pair.done == [
                "primary 1 off",
                "secondary 1 off",
                "primary 0.3 on",
                "secondary 0.3 on",
            ]

    asyncio.run(scenario())


# --- real keepalived, two nodes in namespaces ---------------------------------------------------


@needs_netns
@needs_keepalived
@pytest.mark.slow
def test_a_reconfigure_reloads_keepalived_with_the_new_advert_and_moves_no_vip(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        async with two_nodes(tmp_path) as (owner, other, client):
            for box in (owner, other):
                box.host.popen(sys.executable, "-c", STANDIN, box.name, str(PORT))
            stop = tmp_path / "stop-probe"
            probe = await _probe(client, stop, owner.name)
            pids = [box.heartbeat.keepalived.pid() for box in (owner, other)]
            published = [len(box.published) for box in (owner, other)]
            # A keepalived -t that refuses changes nothing.
            binary = owner.heartbeat.keepalived.binary
            refusing = tmp_path / "refusing-keepalived"
            refusing.write_text("#!/bin/sh\necho '(conf: Line 3) unknown keyword'\nexit 1\n")
            refusing.chmod(0o755)
            owner.heartbeat.keepalived.binary = str(refusing)
            config = owner.heartbeat.keepalived.config.read_text()
            slower = owner.pair.model_copy(update={"advert_interval": 1.0})
            with pytest.raises(HeartbeatError) as refused:
                await owner.heartbeat.reconfigure(slower)
            assert str(refused.value) == (
                "keepalived refused its configuration: line 3: unknown keyword"
            )
            owner.heartbeat.keepalived.binary = binary
            assert owner.heartbeat.keepalived.config.read_text() == config
            assert owner.heartbeat.pair.advert_interval == 0.2
            # Only the advert interval and preemption change without a restart.
            with pytest.raises(HeartbeatError, match="only the advert interval and preemption"):
                await owner.heartbeat.reconfigure(slower.model_copy(update={"peer_port": 9444}))
            # The Active node first, as Cluster.configure does; then the Passive one.
            learnt = "advertisement interval updated from 200ms to 1000ms by master"
            for box in (owner, other):
                assert await box.heartbeat.reconfigure(
                    box.pair.model_copy(update={"advert_interval": 1.0})
                )
                assert "    advert_int 1\n" in box.heartbeat.keepalived.config.read_text()
            assert not await owner.heartbeat.reconfigure(slower)  # nothing new: no reload
            log = other.heartbeat.keepalived.log
            await until("the Passive node learnt the new advert", lambda: learnt in log.read_text())
            await asyncio.sleep(3.5)  # past a silence of 3 adverts at the old interval
            for box in (owner, other):  # back to the default, the Active node first again
                await box.heartbeat.reconfigure(box.pair)
            back = "advertisement interval updated from 1000ms to 200ms by master"
            await until("the Passive node learnt it back", lambda: back in log.read_text())
            await asyncio.sleep(1)
            met = await _met(probe, stop)
            print(f"reconfigure: {met}")
            # Reloaded, not restarted; nobody changed state; the VIP never moved.
            assert [box.heartbeat.keepalived.pid() for box in (owner, other)] == pids
            assert [len(box.published) for box in (owner, other)] == published
            assert (owner.state(), other.state()) == (State.ACTIVE, State.PASSIVE)
            assert owner.holds()
            assert not other.holds()
            assert met == {"refused": 0, "timeouts": 0, "answers": [owner.name]}

    asyncio.run(scenario())
