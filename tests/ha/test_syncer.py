"""Configuration and user sync at run time: the Primary's Syncer and the Secondary's routes
(balancer.api.replica), two real stores on disk, each node's controller on a fake engine, the
nodes joined in process (httpx over ASGI) as the pair's mutual TLS joins them."""

from __future__ import annotations

import asyncio
import html
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.types import ASGIApp, Receive, Scope, Send

from balancer import users
from balancer.api import replica
from balancer.app import create_app
from balancer.controller import Controller, ForwardFailed
from balancer.edits import Edit
from balancer.front import errors
from balancer.front.access import Caller
from balancer.front.gate import CALLER
from balancer.ha import sync
from balancer.ha.sync import Answer, Kind, Mark, State
from balancer.model import NodeSettings, Pair, RealServerState
from balancer.pair.cluster import Cluster
from balancer.pair.link import PeerError
from balancer.pair.syncer import Syncer, forwarding
from balancer.roles import Role
from balancer.store import ReadOnly, Store
from balancer.web.units import moment
from tests.ha.test_sync import psm
from tests.webapp import PASSWORD, Clock, FakeEngine, WebApp, webapp

PRIMARY, SECONDARY = "198.18.0.1", "198.18.0.2"
REFUSED = (
    "this node is the Secondary of an HA pair: its cluster configuration is read-only; "
    f"make the change on the Primary at https://{PRIMARY}:9443"
)


class InProcess:
    """The peer's application reached in this process, failing as the real link fails (one
    line, PeerError) while ``away``."""

    def __init__(self, app: ASGIApp, address: str) -> None:
        self.away = False
        self.calls: list[str] = []
        self._client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url=f"https://{address}:9443"
        )
        self._where = f"{address}:9443"

    async def call(
        self, method: str, path: str, body: Any = None, *, timeout: float | None = None
    ) -> Any:
        self.calls.append(f"{method} {path}")
        if self.away:
            raise PeerError(f"cannot reach the peer at {self._where}: connection refused")
        response = await self._client.request(method, path, json=body)
        if response.is_error:
            reason = response.json()["detail"][0]["reason"]
            raise PeerError(f"the peer at {self._where} refused {method} {path}: {reason}")
        return response.json()

    async def aclose(self) -> None:
        await self._client.aclose()


def as_peer(app: ASGIApp, address: str) -> ASGIApp:
    """``app`` as the gate passes it a request from the verified peer at ``address``."""

    async def admitted(scope: Scope, receive: Receive, send: Send) -> None:
        who = Caller(f"peer {address}", "peer", role=Role.ADMINISTRATOR)
        await app({**scope, CALLER: who}, receive, send)

    return admitted


@dataclass
class Node:
    store: Store
    engine: FakeEngine
    controller: Controller
    app: ASGIApp


@dataclass
class Nodes:
    primary: Node
    secondary: Node
    to_secondary: InProcess  # the Primary's client to its Secondary
    to_primary: InProcess
    syncer: Syncer

    def commit(self, config: Any) -> Awaitable[Any]:
        store = self.primary.store
        store.save(config, base=store.head().id, author="alice", message="edit")
        return self.primary.controller.commit("alice")


def node(root: Path, role: str, syncer: Callable[[], Syncer | None]) -> Node:
    root.mkdir()
    store = Store(root / "balancer.db")
    local, peer = (PRIMARY, SECONDARY) if role == "primary" else (SECONDARY, PRIMARY)
    pair = Pair(role=role, local_address=local, peer_address=peer)
    store.save_node_settings(NodeSettings(pair=pair), author="test")
    engine = FakeEngine()
    controller = Controller(store, engine)
    app = FastAPI()
    errors.install(app)
    app.include_router(replica.router(controller, syncer))
    return Node(store, engine, controller, as_peer(app, peer))


@asynccontextmanager
async def paired(root: Path) -> AsyncIterator[Nodes]:
    running: list[Syncer] = []
    primary = node(root / "primary", "primary", lambda: running[0] if running else None)
    secondary = node(root / "secondary", "secondary", lambda: None)
    users.add_user(primary.store, "loadbalancer", "the Primary's password", author="test")
    to_secondary = InProcess(secondary.app, SECONDARY)
    to_primary = InProcess(primary.app, PRIMARY)
    syncer = Syncer(primary.store, primary.controller, to_secondary, poll=0.05)
    running.append(syncer)
    try:
        for each in (primary, secondary):
            await each.controller.start()
        await syncer.start()
        yield Nodes(primary, secondary, to_secondary, to_primary, syncer)
    finally:
        await syncer.stop()
        for each in (primary, secondary):
            await each.controller.close(stop_engine=True)
            each.store.close()
        await to_secondary.aclose()
        await to_primary.aclose()


async def until(what: str, done: Callable[[], bool]) -> None:
    """Wait for the sync to reach ``done``: at most 20 s, in small steps."""
    for _ in range(400):
        if done():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never: {what}")


def history(store: Store) -> list[tuple[int, str, str]]:
    return [(r.id, r.digest, r.author) for r in reversed(store.revisions(1000))]


def status(nodes: Nodes, kind: Kind) -> str:
    return str(nodes.syncer.status()[kind])


def test_a_commit_on_the_primary_is_stored_and_applied_on_the_secondary(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with paired(tmp_path) as nodes:
            primary, secondary = nodes.primary, nodes.secondary
            # Both begin with revision 0; the Secondary is told to run it.
            first = await nodes.syncer.answer(0)
            assert first.applied, first
            applied = await nodes.commit(psm("192.168.85.10"))
            answer = await nodes.syncer.answer(applied.revision)
            revision = primary.store.revision(applied.revision)
            assert (answer.revision, answer.applied, answer.digest) == (1, True, revision.digest)
            assert str(answer) == f"the Secondary applied revision 1 ({revision.digest})"
            kept = secondary.store.revision(1)
            assert (kept.digest, kept.author, kept.message) == (revision.digest, "alice", "edit")
            assert secondary.store.applied().revision == 1  # type: ignore[union-attr]
            assert secondary.engine.config == primary.engine.config == psm("192.168.85.10")
            assert status(nodes, Kind.CONFIGURATION) == "in sync"
            # The Secondary's audit names who applied it: the peer the gate let in.
            commits = secondary.store.audit_log(action="commit")
            assert commits[0].author == f"peer {PRIMARY}"

    asyncio.run(scenario())


def test_users_added_on_the_primary_sign_in_on_the_secondary(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with paired(tmp_path) as nodes:
            secondary = nodes.secondary.store
            await until("the Primary's users on the Secondary", lambda: bool(secondary.users()))
            users.add_user(
                nodes.primary.store, "bob", "the second user's long password", author="alice"
            )
            await until("bob on the Secondary", lambda: len(secondary.users()) == 2)
            await until("users in sync", lambda: status(nodes, Kind.USERS) == "in sync")
            assert [u.name for u in secondary.users()] == ["bob", "loadbalancer"]
            assert users.verify(secondary, "bob", "the second user's long password") is not None
            snapshot = nodes.primary.store.users_snapshot()
            assert secondary.received_users() == snapshot.mark

    asyncio.run(scenario())


def test_a_secondary_that_was_away_catches_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        async with paired(tmp_path) as nodes:
            primary, secondary = nodes.primary, nodes.secondary
            assert (await nodes.syncer.answer(0)).applied
            nodes.to_secondary.away = True
            applied = await nodes.commit(psm("192.168.85.10"))
            answer = await nodes.syncer.answer(applied.revision)
            assert not answer.applied
            assert answer.reason == (
                f"cannot reach the Secondary: cannot reach the peer at {SECONDARY}:9443: "
                "connection refused"
            )
            assert status(nodes, Kind.CONFIGURATION).startswith("failed: cannot reach")
            # Saved and not committed, then committed with more: all of it is history.
            primary.store.save(psm("192.168.85.12"), base=1, author="bob", message="pending")
            last = await nodes.commit(psm("192.168.85.10", "192.168.85.11"))
            assert secondary.store.head().id == 0

            nodes.to_secondary.away = False
            # Asked where it stands after the pause (sync.RETRY), then sent what it lacks.
            await until(
                "the Secondary caught up",
                lambda: status(nodes, Kind.CONFIGURATION) == "in sync",
            )
            assert history(secondary.store) == history(primary.store)
            assert secondary.store.applied().revision == last.revision  # type: ignore[union-attr]
            assert secondary.engine.config == psm("192.168.85.10", "192.168.85.11")
            caught_up = await nodes.syncer.answer(last.revision)
            assert caught_up.applied
            # Only the last was run there; the ones before it are history.
            runs = [e.detail["revision"] for e in secondary.store.audit_log(action="commit")]
            assert runs == [last.revision, 0]

    with caplog.at_level(logging.INFO, logger="balancer.pair.syncer"):
        asyncio.run(scenario())
    # Said once when it failed (not at every retry) and once when it came back.
    said = [(r.levelname, r.getMessage()) for r in caplog.records]
    said = [(level, text) for level, text in said if "of the configuration" in text]
    assert [level for level, _ in said] == ["WARNING", "INFO"]
    assert said[0][1].startswith("HA sync of the configuration: failed: cannot reach the Secondary")


def test_a_revision_the_secondary_holds_otherwise_is_refused_and_said(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with paired(tmp_path) as nodes:
            assert (await nodes.syncer.answer(0)).applied
            nodes.to_secondary.away = True
            applied = await nodes.commit(psm("192.168.85.10"))
            assert not (await nodes.syncer.answer(applied.revision)).applied
            # Meanwhile the Secondary got another revision 1 (as if changed apart from the pair).
            other = psm("192.168.85.99")
            secondary = nodes.secondary
            secondary.store.save(other, base=0, author="eve", message="apart")
            nodes.to_secondary.away = False
            await until(
                "the conflict seen",
                lambda: status(nodes, Kind.CONFIGURATION).startswith("failed: the Secondary's"),
            )
            answer = await nodes.syncer.answer(applied.revision)
            assert not answer.applied
            assert answer.reason is not None
            assert answer.reason.startswith("the Secondary's revision 1 has digest ")
            assert secondary.store.revision(1).config == other  # not overwritten

    asyncio.run(scenario())


def test_an_edit_on_the_secondary_is_refused_naming_the_primary(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with paired(tmp_path) as nodes:
            controller = nodes.secondary.controller
            edit = Edit.add_virtual_service(psm("192.168.85.10").virtual_services[0].model_dump())
            with pytest.raises(ReadOnly) as refused:
                controller.save(edit, base=None, author="carol")
            assert str(refused.value) == REFUSED
            with pytest.raises(ReadOnly):
                await controller.commit("carol")
            assert nodes.secondary.store.head().id == 0

    asyncio.run(scenario())


def test_the_secondarys_api_refuses_edits_with_409_and_the_line(tmp_path: Path) -> None:
    with webapp(tmp_path) as web:
        pair = Pair(role="secondary", local_address=SECONDARY, peer_address=PRIMARY)
        web.store.save_node_settings(NodeSettings(pair=pair), author="test")
        service = psm("192.168.85.10").virtual_services[0].model_dump(mode="json")
        backup = web.local.get("/api/v1/backup").json()
        users_before = web.store.users_snapshot()
        password = {"password": "another long password"}
        for method, path, body in (
            ("POST", "/api/v1/virtual-services", service),
            ("POST", "/api/v1/commit", None),
            ("POST", "/api/v1/restore", backup),
            # Users and API keys are the Primary's too.
            ("POST", "/api/v1/users", {"name": "eve", **password}),
            ("PUT", "/api/v1/users/loadbalancer/password", password),
            ("DELETE", "/api/v1/users/loadbalancer", None),
            ("POST", "/api/v1/api-keys", {"name": "monitoring", "owner": "loadbalancer"}),
        ):
            reply = web.local.request(method, path, json=body)
            assert reply.status_code == 409, (path, reply.text)
            assert reply.json() == {"detail": [{"field": "", "reason": REFUSED}]}
        assert web.store.head().id == 0
        assert web.store.users_snapshot() == users_before
        # Reading is allowed; a revision is listed with the digest both nodes name it by.
        listed = web.local.get("/api/v1/revisions").json()
        assert [(r["id"], r["digest"]) for r in listed] == [(0, web.store.head().digest)]
        # Drain, halt and online go to the Primary, which this node cannot reach here.
        reply = web.local.post(
            "/api/v1/virtual-services/x/real-servers/y/state", json={"state": "drain"}
        )
        assert reply.status_code == 502
        assert reply.json()["detail"][0]["reason"] == (
            f"drain, halt and online are done by the Primary at https://{PRIMARY}:9443, which "
            "this Secondary has not reached yet"
        )


def test_a_drain_on_the_secondary_is_done_by_the_primary_and_reaches_both(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        async with paired(tmp_path) as nodes:
            primary, secondary = nodes.primary, nodes.secondary
            await nodes.commit(psm("192.168.85.10", "192.168.85.11"))
            secondary.controller.forward = forwarding(nodes.to_primary)
            drained = await secondary.controller.set_state(
                "CyberArk-PSM", "PSM1", RealServerState.DRAIN, "carol"
            )
            assert drained.id == primary.store.applied().revision  # type: ignore[union-attr]
            assert secondary.store.applied().revision == drained.id  # type: ignore[union-attr]
            assert drained.digest == primary.store.revision(drained.id).digest
            for engine in (primary.engine, secondary.engine):
                vs = engine.config.virtual_service("CyberArk-PSM")
                assert vs is not None
                assert vs.real_servers[0].state is RealServerState.DRAIN
            (action,) = primary.store.audit_log(action="drain")
            assert action.author == "carol"

            # What the Primary refuses is said on the Secondary, in one line.
            with pytest.raises(ForwardFailed) as refused:
                await secondary.controller.set_state(
                    "CyberArk-PSM", "PSM9", RealServerState.HALT, "carol"
                )
            assert str(refused.value) == (
                "halt of real server PSM9 of CyberArk-PSM was not done by the Primary: the peer "
                f"at {PRIMARY}:9443 refused POST /api/v1/peer/actions: there is no real server "
                "in 'CyberArk-PSM' called 'PSM9'"
            )

    asyncio.run(scenario())


def test_the_secondarys_routes_check_the_role_and_the_message(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with paired(tmp_path) as nodes:
            # The Primary receives nothing; the Secondary does no one's actions.
            with pytest.raises(PeerError, match="this node is the Primary of the pair"):
                await nodes.to_primary.call("GET", "/api/v1/peer/heads")
            action = sync.Action(RealServerState.DRAIN, "CyberArk-PSM", "PSM1", "carol")
            with pytest.raises(PeerError, match="this node is the Secondary of the pair"):
                await nodes.to_secondary.call("POST", "/api/v1/peer/actions", sync.to_json(action))
            heads = sync.to_json(sync.Heads(Mark(0, "0" * 64), None, None))
            transport = httpx.ASGITransport(app=nodes.secondary.app)
            async with httpx.AsyncClient(transport=transport, base_url="https://x") as client:
                for body, field, reason in (
                    ({"type": "revision"}, "revision.mark", "is missing"),
                    (heads, "type", "'revision' is expected here"),
                ):
                    reply = await client.post("/api/v1/peer/revisions", json=body)
                    assert reply.status_code == 422
                    assert reply.json() == {"detail": [{"field": field, "reason": reason}]}

    asyncio.run(scenario())


def test_the_sync_says_each_kinds_state(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with paired(tmp_path) as nodes:
            await until("in sync", lambda: nodes.syncer.said() == "in sync")
            found = nodes.syncer.status()
            assert {kind: s.state for kind, s in found.items()} == {
                Kind.CONFIGURATION: State.IN_SYNC,
                Kind.USERS: State.IN_SYNC,
            }
            nodes.to_secondary.away = True
            users.add_user(
                nodes.primary.store, "dave", "the fourth user's long password", author="alice"
            )
            await until("users failed", lambda: nodes.syncer.said().startswith("users failed"))

    asyncio.run(scenario())


class Answering:
    """The Primary's sync, as the WebUI's commit asks it: the Secondary applied each revision."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def answer(self, revision: int, timeout: float = 5.0) -> Answer:
        return Answer(revision, True, self.store.revision(revision).digest, 1_700_000_000.0)


@contextmanager
def signed_in(tmp_path: Path, role: str) -> Iterator[tuple[TestClient, Store, Cluster, str]]:
    with Store(tmp_path / "balancer.db") as store:
        users.add_user(store, "loadbalancer", PASSWORD, author="test")
        local, peer = (PRIMARY, SECONDARY) if role == "primary" else (SECONDARY, PRIMARY)
        pair = Pair(role=role, local_address=local, peer_address=peer)
        store.save_node_settings(NodeSettings(pair=pair), author="test")
        controller = Controller(store, FakeEngine())
        cluster = Cluster(store, controller, tmp_path)
        app = create_app(store, controller, cluster, tmp_path, lambda _: None)
        with TestClient(app, base_url="https://balancer.test") as client:
            web = WebApp(client, client, store, FakeEngine(), Clock())
            yield client, store, cluster, web.sign_in()


def test_the_webuis_commit_says_what_the_secondary_did(tmp_path: Path) -> None:
    with signed_in(tmp_path, "primary") as (client, store, cluster, csrf):
        cluster.syncer = Answering(store)  # type: ignore[assignment]
        store.save(psm("192.168.85.10"), base=0, author="alice", message="edit")
        headers = {"HX-Request": "true", "X-CSRF-Token": csrf}
        reply = client.post("/lbadmin/commit", headers=headers)
        assert reply.status_code == 200, reply.text
        digest = store.revision(1).digest
        assert (
            f"Revision 1 is running; the Secondary applied revision 1 ({digest}) at "
            f"{moment(1_700_000_000.0)}." in reply.text
        )


def test_the_webuis_commit_on_the_secondary_is_refused_naming_the_primary(
    tmp_path: Path,
) -> None:
    with signed_in(tmp_path, "secondary") as (client, store, _, csrf):
        store.save(psm("192.168.85.10"), base=0, author="alice", message="edit")
        headers = {"HX-Request": "true", "X-CSRF-Token": csrf}
        reply = client.post("/lbadmin/commit", headers=headers)
        assert reply.status_code == 422
        assert f"The commit was refused: {REFUSED}." in html.unescape(reply.text)
        assert store.applied() is None
