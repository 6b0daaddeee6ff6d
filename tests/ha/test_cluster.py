"""This node's place in an HA pair at run time (balancer.pair.cluster.Cluster), with fakes beside
its doors: a real Store on disk and a Controller on the tests' fake engine; the pair's files made
with balancer.ha.trust; keepalived as a fake Heartbeat (the ``heartbeat=`` maker) that writes
what it was asked into a list it shares with the peer; and the peer as a small application on a
real HTTPS listener at 127.0.0.2 with the pair's trust, which the Cluster's own Peer reaches over
mutual TLS. Also the operator's doors to Restart Heartbeat and switchover: the API, the WebUI's
Restart Services page and the audit, on the same Cluster.

keepalived itself, in namespaces, is tests/ha/test_heartbeat.py's; two whole nodes are
tests/ha/test_pair_*.py's."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import asdict, dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, HTTPException

from balancer import certificates
from balancer.app import create_app
from balancer.controller import Controller
from balancer.events import RoleChanged
from balancer.front.gate import local
from balancer.front.listeners import PairTLS, listener, network_socket
from balancer.ha import role, sync, trust
from balancer.ha.role import State
from balancer.model import Pair
from balancer.model.types import IPAddress
from balancer.pair.cluster import HEARTBEAT, JOIN_POLL, Cluster, PairError
from balancer.pair.heartbeat import Audit, Heartbeat, HeartbeatError, floating_ips
from balancer.pair.link import STATUS
from balancer.pair.maintenance import perform
from balancer.pair.status import NodeView
from balancer.store import Store
from tests.ha.test_sync import psm
from tests.ha.test_trust import NOW, pair_node
from tests.webapp import FakeEngine

THIS = IPv4Address("127.0.0.1")
PEER = IPv4Address("127.0.0.2")
TIMEOUT = 10.0  # a bound on waiting, not a measure
STEP = 0.01
RESTART = "/lbadmin/maintenance/restart"


class FakeHeartbeat(Heartbeat):
    """keepalived as the Cluster drives it: in ``state``, writing each thing it is asked into
    ``done`` ("this restart", a reconfigure as "secondary 1 off"), and the floating IPs it is
    given into ``vips``; a reconfigure refused with ``refuse`` when set."""

    def __init__(
        self,
        data_dir: Path,
        pair: Pair,
        publish: Callable[[RoleChanged], None],
        audit: Audit,
        *,
        done: list[str],
        state: State,
    ) -> None:
        super().__init__(data_dir, pair, publish, audit)  # no process, no file: only names
        self.done = done
        self.state = state
        self.vips: list[tuple[str, ...]] = []
        self.refuse: str | None = None

    def status(self) -> role.Status:
        return role.Status(self.state, None, "as the test says", 0.0)

    async def start(self, vips: Iterable[str]) -> None:
        self.done.append("this start")
        self.vips.append(tuple(vips))

    async def update(self, vips: Iterable[str]) -> bool:
        self.done.append("this update")
        self.vips.append(tuple(vips))
        return True

    async def reconfigure(self, pair: Pair) -> bool:
        if self.refuse is not None:
            raise HeartbeatError(self.refuse)
        preempt = "on" if pair.preempt else "off"
        self.done.append(f"{pair.role} {pair.advert_interval:g} {preempt}")
        changed, self.pair = pair != self.pair, pair
        return changed

    async def restart(self) -> None:
        self.done.append("this restart")
        if self.state is State.ACTIVE:  # it hands the floating IPs over, and stays Passive
            self.state = State.PASSIVE

    async def switchover(self) -> None:
        self.done.append("this switchover")
        self.state = State.PASSIVE

    async def stop(self, reason: str = "") -> None:
        self.done.append("this stop")

    async def close(self) -> None:
        self.done.append("this close")


@dataclass
class StubPeer:
    """The peer's side of the link: its status (``view``; None answers 503, as a peer that
    cannot say), and its keepalived's restart or switchover, written into ``done`` and
    answered with the state it came back in (``came_back``), or refused with ``refuse``;
    while ``hold`` is set and not yet, it answers nothing (``holding``)."""

    done: list[str]
    view: NodeView | None
    refuse: str | None = None
    came_back: str = "passive"
    hold: asyncio.Event | None = None
    holding: bool = False

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.get(STATUS)
        def status() -> dict[str, Any]:
            if self.view is None:
                raise HTTPException(503, "not ready")
            return asdict(self.view)

        @app.post(HEARTBEAT + "{action}")
        async def heartbeat(action: str) -> dict[str, str]:
            if self.hold is not None:
                self.holding = True
                await self.hold.wait()
            if self.refuse is not None:
                raise HTTPException(409, self.refuse)
            self.done.append(f"peer {action}")
            return {"done": action, "state": self.came_back}

        return app


def peer_view(state: str) -> NodeView:
    return NodeView(str(PEER), "secondary", state, None, "fake", None, "in sync")


@dataclass
class Rig:
    root: Path
    store: Store
    controller: Controller
    cluster: Cluster
    peer: StubPeer
    pair: Pair
    done: list[str]  # what this node's keepalived and the peer's were asked, in order
    heartbeats: list[FakeHeartbeat] = field(default_factory=list)  # each Cluster made
    secured: list[tuple[Any, Any]] = field(default_factory=list)  # what the listeners were given

    @property
    def heartbeat(self) -> FakeHeartbeat:
        return self.heartbeats[-1]

    async def heard(self, state: str) -> None:
        """The peer now says it is ``state``, and this node has heard it say so."""
        self.peer.view = peer_view(state)
        link = self.cluster.link
        assert link is not None
        await link.ask()
        assert link.view is not None
        assert link.view.state == state

    async def settled(self) -> None:
        """Wait until the first request of each of the Cluster's parts to the peer has been
        answered. httpcore leaves the socket of a request cancelled during its TLS handshake
        open (its start_tls closes it on an Exception, not on a cancellation), so the parts
        are stopped between requests, not in the middle of the first."""
        link, syncer = self.cluster.link, self.cluster.syncer

        def answered() -> bool:
            heard = link is None or link.heard_at is not None or link.error is not None
            statuses = {} if syncer is None else syncer.status()
            return heard and all(s.state is not sync.State.UNKNOWN for s in statuses.values())

        await until("the peer answered each part once", answered)

    async def commit(self, config: Any) -> None:
        self.store.save(config, base=self.store.head().id, author="alice", message="edit")
        await self.controller.commit("alice")


async def until(what: str, done: Callable[[], bool]) -> None:
    for _ in range(int(TIMEOUT / STEP)):
        if done():
            return
        await asyncio.sleep(STEP)
    raise AssertionError(f"never: {what}")


@contextlib.asynccontextmanager
async def serving(
    app: FastAPI, data_dir: Path, own: trust.Trust, address: IPAddress, peer: IPAddress
) -> AsyncIterator[int]:
    """``app`` on an HTTPS listener at ``address`` with the pair's trust, as a node's; its
    port."""
    sock = network_socket(address, 0)
    server = listener(app, certificates.certificate(data_dir / "webui.pem", f"node {address}"))
    server.config.load()
    assert server.config.ssl is not None
    tls = PairTLS()
    tls.serve_on(server.config.ssl)
    tls.set(own, peer)
    serving = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    try:
        await until("the peer listens", lambda: server.started)
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        await serving
        sock.close()


@contextlib.asynccontextmanager
async def rig(
    root: Path, role_: str = "primary", state: State = State.ACTIVE, peer: str = "passive"
) -> AsyncIterator[Rig]:
    """This node (standalone until the test forms the pair, its pair files in place) with
    keepalived in ``state``, and its peer, saying it is ``peer``, listening."""
    authority = trust.make_ca(now=NOW)
    data_dir, peer_dir = root / "node", root / "peer"
    pair_node(data_dir, authority, THIS)
    peer_trust = pair_node(peer_dir, authority, PEER)
    done: list[str] = []
    stub = StubPeer(done, peer_view(peer))
    with Store(data_dir / "balancer.db") as store:
        controller = Controller(store, FakeEngine())
        await controller.start()
        made: list[FakeHeartbeat] = []
        secured: list[tuple[Any, Any]] = []

        def heartbeat(
            data_dir: Path, pair: Pair, publish: Callable[[RoleChanged], None], audit: Audit
        ) -> FakeHeartbeat:
            made.append(FakeHeartbeat(data_dir, pair, publish, audit, done=done, state=state))
            return made[-1]

        cluster = Cluster(
            store,
            controller,
            data_dir,
            heartbeat=heartbeat,
            secure=lambda pair, address: secured.append((pair, address)),
        )
        try:
            async with serving(stub.app(), peer_dir, peer_trust, PEER, THIS) as port:
                pair = Pair(role=role_, local_address=THIS, peer_address=PEER, peer_port=port)
                try:
                    running = Rig(root, store, controller, cluster, stub, pair, done, made, secured)
                    yield running
                finally:
                    await running.settled()
                    await cluster.stop()  # before its peer goes
        finally:
            await controller.close(stop_engine=True)


def audited(store: Store, action: str) -> list[tuple[str, dict[str, Any]]]:
    return [(e.author, e.detail) for e in store.audit_log(100) if e.action == action]


# --- the Cluster ------------------------------------------------------------------------------


def test_a_standalone_node_has_no_view_and_runs_nothing(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with rig(tmp_path) as r:
            await r.cluster.start()
            assert r.cluster.view() is None
            assert r.heartbeats == []
            assert r.cluster.link is None
            assert r.cluster.syncer is None
            for asked in (r.cluster.restart_heartbeat, r.cluster.switchover):
                with pytest.raises(PairError, match=r"^this node is not in a pair$"):
                    await asked()
            assert r.done == []

    asyncio.run(scenario())


def test_form_keeps_the_pair_and_starts_its_parts(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with rig(tmp_path, state=State.ACTIVE, peer="passive") as r:
            await r.cluster.form(r.pair)
            assert r.store.node_settings().pair == r.pair
            assert r.done == ["this start"]
            assert r.heartbeat.vips == [()]  # nothing committed: no floating IP yet
            assert [address for _, address in r.secured] == [None, PEER]  # the listeners'
            assert r.cluster.syncer is not None  # the Primary syncs
            await until(
                "the peer heard",
                lambda: r.cluster.link is not None and r.cluster.link.view is not None,
            )
            view = r.cluster.view()
            assert view is not None
            assert (view.this.role, view.this.state, view.this.address) == (
                "primary",
                "active",
                str(THIS),
            )
            assert view.peer is not None
            assert (view.peer.role, view.peer.state) == (
                "secondary",
                "passive",
            )
            assert view.link is not None
            r.heartbeat.state = State.PASSIVE  # keepalived said so
            view = r.cluster.view()
            assert view is not None
            assert view.this.state == "passive"

    asyncio.run(scenario())


def test_a_bad_pair_file_is_a_fault_shown_while_the_api_and_webui_stay_up(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with rig(tmp_path) as r:
            r.store.save_node_settings(
                r.store.node_settings().model_copy(update={"pair": r.pair}), author="test"
            )
            node_pem = trust.directory(r.root / "node") / trust.NODE_FILE
            node_pem.write_text("not a certificate\n")
            await r.cluster.start()
            view = r.cluster.view()
            assert view is not None
            assert view.this.state == "fault"
            assert r.cluster.fault is not None
            assert r.cluster.fault.startswith("the pair's files: ")
            assert r.heartbeats == []
            assert r.cluster.link is None
            assert [d["error"] for _, d in audited(r.store, "pair_fault")] == [r.cluster.fault]
            app = create_app(r.store, r.controller, r.cluster, r.root / "node", lambda _: None)
            transport = httpx.ASGITransport(app=local(app))
            async with httpx.AsyncClient(transport=transport, base_url="http://balancer") as api:
                shown = (await api.get("/api/v1/ha")).json()["pair"]
                assert shown["this"]["state"] == "fault"
                assert (await api.get("/api/v1/status")).status_code == 200
                page = await api.get(RESTART)
                assert page.status_code == 200
                assert "Restart Heartbeat" in page.text
                refused = await api.post("/api/v1/ha/heartbeat/restart")
                assert refused.status_code == 409
                assert refused.json()["detail"][0]["reason"] == r.cluster.fault
            assert r.done == []

    asyncio.run(scenario())


def test_dissolve_removes_the_pair_files_and_the_pair(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with rig(tmp_path) as r:
            await r.cluster.form(r.pair)
            await r.settled()
            await r.cluster.dissolve(keep_floating_ips=False)
            assert r.done == ["this start", "this stop"]  # keepalived stopped, not left
            assert not trust.directory(r.root / "node").exists()
            assert r.store.node_settings().pair is None
            assert r.cluster.view() is None
            assert (r.cluster.link, r.cluster.syncer, r.cluster.heartbeat) == (None, None, None)
            assert r.secured[-1] == (None, None)  # the listeners forget the pair

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("state", "order"),
    [
        # The Active node restarts last: it hands the floating IPs to a peer that is ready.
        (State.ACTIVE, ["peer restart", "this restart"]),
        (State.PASSIVE, ["this restart", "peer restart"]),
    ],
)
def test_restart_heartbeat_restarts_the_passive_node_first(
    tmp_path: Path, state: State, order: list[str]
) -> None:
    async def scenario() -> None:
        async with rig(
            tmp_path, state=state, peer="active" if state is State.PASSIVE else "passive"
        ) as r:
            await r.cluster.form(r.pair)
            said = await r.cluster.restart_heartbeat()
            assert said == "keepalived restarted on both nodes, one at a time"
            assert r.done == ["this start", *order]

    asyncio.run(scenario())


def test_restart_heartbeat_is_refused_on_the_secondary_and_when_the_peer_refuses(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        async with rig(tmp_path / "secondary", role_="secondary") as r:
            await r.cluster.form(r.pair)
            await r.heard("active")
            await until("keepalived started", lambda: r.done == ["this start"])
            with pytest.raises(PairError, match=r"^Restart Heartbeat is done on the Primary$"):
                await r.cluster.restart_heartbeat()
            assert r.done == ["this start"]
        async with rig(tmp_path / "primary", state=State.ACTIVE) as r:
            await r.cluster.form(r.pair)
            r.peer.refuse = "keepalived: no such file"
            with pytest.raises(PairError, match="keepalived: no such file") as refused:
                await r.cluster.restart_heartbeat()
            assert "\n" not in str(refused.value)
            # The Active node keeps the floating IPs: its keepalived was not touched.
            assert r.done == ["this start"]
            r.peer.refuse, r.peer.came_back = None, "fault"
            with pytest.raises(PairError, match=r"^the peer came back in fault, so this node kept"):
                await r.cluster.restart_heartbeat()
            assert r.done == ["this start", "peer restart"]

    asyncio.run(scenario())


@pytest.mark.parametrize("peer", ["active", "fault", "unknown", None])
def test_switchover_is_refused_unless_the_peer_is_passive(tmp_path: Path, peer: str | None) -> None:
    async def scenario() -> None:
        async with rig(tmp_path, state=State.ACTIVE) as r:
            await r.cluster.form(r.pair)
            link = r.cluster.link
            assert link is not None
            if peer is None:  # never heard
                r.peer.view = None
                link.view = None
                await link.ask()
            else:
                await r.heard(peer)
            # The peer is asked at once; one that cannot say is not taken for Passive.
            said = f"the peer is {peer}, not Passive" if peer else "the peer at .* refused"
            with pytest.raises(PairError, match=f"^switchover: {said}"):
                await r.cluster.switchover()
            assert r.done == ["this start"]  # nothing was done
            await r.heard("passive")
            assert await r.cluster.switchover() == "the other node is now Active"
            assert r.done == ["this start", "this switchover"]

    asyncio.run(scenario())


def test_one_restart_heartbeat_or_switchover_at_a_time(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with rig(tmp_path, state=State.ACTIVE) as r:
            await r.cluster.form(r.pair)
            await r.heard("passive")
            r.peer.hold = asyncio.Event()
            first = asyncio.get_running_loop().create_task(
                perform(r.cluster, "restart_heartbeat", author="alice")
            )
            await until("the peer restarts", lambda: r.peer.holding)
            for action in ("restart_heartbeat", "switchover"):
                with pytest.raises(PairError, match="under way on this node: try again"):
                    await perform(r.cluster, action, author="bob")  # type: ignore[arg-type]
            r.peer.hold.set()
            assert await first == "keepalived restarted on both nodes, one at a time"
            assert r.done == ["this start", "peer restart", "this restart"]
            refused = [a for a, d in audited(r.store, "switchover") if "refused" in d]
            assert refused == ["bob"]

    asyncio.run(scenario())


def test_switchover_on_the_passive_node_asks_the_active_peer(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with rig(tmp_path, role_="secondary", state=State.PASSIVE, peer="active") as r:
            await r.cluster.form(r.pair)
            await until("keepalived started", lambda: r.done == ["this start"])
            assert await r.cluster.switchover() == "the other node is now Active"
            assert r.done == ["this start", "peer switchover"]

    asyncio.run(scenario())


def test_stop_leaves_keepalived_running_and_release_stops_it(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with rig(tmp_path) as r:
            await r.cluster.form(r.pair)
            await r.settled()
            await r.cluster.stop()  # a restart of the management service
            assert r.done == ["this start", "this close"]
            assert (r.cluster.link, r.cluster.syncer, r.cluster.heartbeat) == (None, None, None)
            await r.cluster.start()  # the next run: a new Heartbeat (it adopts keepalived)
            assert len(r.heartbeats) == 2
            await r.settled()
            await r.cluster.release()  # the node stops
            assert r.done == ["this start", "this close", "this start", "this stop"]

    asyncio.run(scenario())


def test_the_floating_ips_follow_a_commit(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with rig(tmp_path) as r:
            await r.cluster.form(r.pair)
            config = psm("10.0.0.1")
            await r.commit(config)
            vips = floating_ips(config)
            assert vips == ("192.168.85.100",)
            await until("keepalived has the VIP", lambda: r.heartbeat.vips[-1] == vips)
            moved = config.model_copy(
                update={
                    "virtual_services": [
                        config.virtual_services[0].model_copy(
                            update={"ip": IPv4Address("192.168.85.101")}
                        )
                    ]
                }
            )
            await r.commit(moved)
            await until(
                "keepalived has the new VIP", lambda: r.heartbeat.vips[-1] == ("192.168.85.101",)
            )

    asyncio.run(scenario())


# --- the operator's doors: the API and the WebUI's Restart Services ---------------------------


def test_the_operator_restarts_heartbeat_and_switches_over_through_the_api_and_webui(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        async with rig(tmp_path, state=State.ACTIVE, peer="passive") as r:
            await r.cluster.form(r.pair)
            await r.heard("passive")
            app = create_app(r.store, r.controller, r.cluster, r.root / "node", lambda _: None)
            transport = httpx.ASGITransport(app=local(app))
            async with httpx.AsyncClient(
                transport=transport, base_url="http://balancer", headers={"X-Balancer-User": "ops"}
            ) as client:
                page = (await client.get(RESTART)).text
                assert 'name="action" value="heartbeat"' in page
                assert 'name="action" value="switchover"' in page
                # Confirmed first, as the page's other disruptive restarts.
                asked = await client.post(RESTART, data={"action": "heartbeat"})
                assert "Restart Heartbeat?" in asked.text
                assert r.done == ["this start"]
                done = await client.post(RESTART, data={"action": "heartbeat", "confirm": "yes"})
                assert done.status_code == 200
                assert (
                    "Restart Heartbeat: keepalived restarted on both nodes, one at a time"
                    in done.text
                )
                assert r.done[1:] == ["peer restart", "this restart"]
                # This node came back Passive: a switchover now asks the peer.
                answer = await client.post("/api/v1/ha/switchover")
                assert answer.status_code == 200, answer.text
                assert answer.json() == {"message": "the other node is now Active"}
                assert r.done[-1] == "peer switchover"
                # Refused, in one line: the peer's keepalived said no.
                r.peer.refuse = (
                    "switchover: this node is Passive, so it holds no floating IP to hand over"
                )
                refused = await client.post("/api/v1/ha/switchover")
                assert refused.status_code == 409
                [problem] = refused.json()["detail"]
                assert problem["reason"].endswith("so it holds no floating IP to hand over")
                page = await client.post(RESTART, data={"action": "switchover", "confirm": "yes"})
                assert page.status_code == 409
                assert "Switchover: the peer&#39;s keepalived:" in page.text
            assert [detail for _, detail in audited(r.store, "restart_heartbeat")] == [
                {"done": "keepalived restarted on both nodes, one at a time"}
            ]
            switched = audited(r.store, "switchover")
            assert [author for author, _ in switched] == ["ops", "ops", "ops"]
            assert ["done" in detail for _, detail in reversed(switched)] == [True, False, False]

    asyncio.run(scenario())


def test_restart_services_offers_restart_heartbeat_on_the_primary_only(tmp_path: Path) -> None:
    async def scenario() -> None:
        for role_ in (None, "secondary", "primary"):
            async with rig(tmp_path / str(role_), role_=role_ or "primary") as r:
                if role_ is not None:
                    await r.cluster.form(r.pair)
                app = create_app(r.store, r.controller, r.cluster, r.root / "node", lambda _: None)
                transport = httpx.ASGITransport(app=local(app))
                async with httpx.AsyncClient(transport=transport, base_url="http://x") as client:
                    page = (await client.get(RESTART)).text
                offered = {
                    name: f'name="action" value="{name}"' in page
                    for name in ("heartbeat", "switchover")
                }
                assert (
                    offered
                    == {
                        None: {"heartbeat": False, "switchover": False},
                        "secondary": {"heartbeat": False, "switchover": True},
                        "primary": {"heartbeat": True, "switchover": True},
                    }[role_]
                )
                if role_ == "secondary":
                    assert "Done on the Primary, which restarts both nodes." in page
                if role_ is None:
                    assert "Only in an HA pair" in page

    asyncio.run(scenario())


def test_a_joining_secondary_starts_keepalived_once_the_primary_is_active(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with rig(tmp_path, role_="secondary", state=State.PASSIVE, peer="passive") as r:
            await r.cluster.form(r.pair)
            await r.heard("passive")
            await asyncio.sleep(3 * JOIN_POLL)
            assert r.done == []  # the Primary still carries the traffic alone
            await r.heard("active")
            await until("keepalived started", lambda: r.done == ["this start"])
            # A later start (a restart, a reboot) does not wait: the Primary may be gone.
            await r.cluster.stop()
            await r.cluster.start()
            assert r.done == ["this start", "this close", "this start"]

    asyncio.run(scenario())
