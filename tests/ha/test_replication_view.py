"""Persistence replication made visible (issue 13 item 3) and the switchover's wait for it
(item 6), with fakes: an engine whose replication the test sets (``Replicating``), the pair's
view set by the test (tests/test_webui_ha.py's ``Shown`` Cluster), and a peer that answers
what the test says. The words (balancer.pair.replication), System Overview, GET /api/v1/ha,
``balancer ha status`` and ``balancer persistence`` on a Secondary, each from the same view;
the engines' replication itself is tests/test_haproxy_peers.py's and
tests/test_builtin_replication.py's, two whole nodes tests/ha/test_persistence_pair.py's."""

from __future__ import annotations

import asyncio
import calendar
import dataclasses
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from balancer.api import peer as peer_routes
from balancer.client import api_socket
from balancer.engines import EngineError
from balancer.front.gate import local
from balancer.front.listeners import listener, unix_socket
from balancer.ha.role import State
from balancer.pair import replication
from balancer.pair.cluster import PairError
from balancer.pair.link import STATUS, PeerError
from balancer.pair.status import NodeView, PairView
from balancer.state import ReplicationStatus, TableReplication
from tests.appliance import wait_for
from tests.ha.test_cluster import PEER as PEER_ADDRESS
from tests.ha.test_cluster import TIMEOUT, peer_view, rig, until
from tests.test_webui_ha import VIP, PairWeb, pair_web, part, text
from tests.webapp import FakeEngine

# 2026-06-19 12:01:05 UTC (a day past: the pages say its date), and an hour later.
SINCE = float(calendar.timegm((2026, 6, 19, 12, 1, 5, 0, 0, 0)))
NOW = SINCE + 3600
PSM = "CyberArk-PSM"


def status(
    *tables: TableReplication, up: bool = True, synced: bool = True, since: float | None = SINCE
) -> ReplicationStatus:
    return ReplicationStatus(
        peer="198.18.0.2:7778", up=up, since=since, synced=synced, tables=tables
    )


def table(entries: int, pending: int = 0, lag: float | None = 0.0, service: str = PSM) -> Any:
    return TableReplication(service=service, entries=entries, pending=pending, lag=lag)


def node(address: str, role: str, said: replication.Said) -> NodeView:
    return NodeView(address, role, "active", 7, "builtin", None, "owner", replication=said)


def pair(here: replication.Said, there: replication.Said | None = None) -> PairView:
    """The Primary 198.18.0.1 as it sees itself and its Secondary (not heard: ``there`` None)."""
    peer = None if there is None else node("198.18.0.2", "secondary", there)
    return PairView(this=node("198.18.0.1", "primary", here), peer=peer, link=0.4)


def lines(shown: replication.Shown | None) -> list[str]:
    """The view as ``balancer ha status`` words it, for reading the tests."""
    assert shown is not None
    said = [f"{n.node}: {n.link}" for n in shown.nodes]
    for t in shown.tables:
        said.append(f"{t.service}: {t.entries}")
        said += [f"  {s.node}: {s.link}; {s.behind}" for s in t.nodes]
    return said


# --- the words ----------------------------------------------------------------------------------


def test_each_table_on_both_nodes_in_an_operators_words() -> None:
    here = status(table(20), table(3, service="Web"))
    there = status(table(20, pending=2, lag=0.25), table(3, service="Web"), since=SINCE + 7)
    assert lines(replication.shown(pair(here, there), "198.18.0.2", now=NOW)) == [
        "198.18.0.1: link up since 12:01:05 UTC",
        "198.18.0.2: link up since 12:01:12 UTC",
        "CyberArk-PSM: entries: 20 here, 20 on the peer",
        "  198.18.0.1: link up since 12:01:05 UTC; lag 0.0 s (0 pending)",
        "  198.18.0.2: link up since 12:01:12 UTC; lag 0.2 s (2 pending)",
        "Web: entries: 3 here, 3 on the peer",
        "  198.18.0.1: link up since 12:01:05 UTC; lag 0.0 s (0 pending)",
        "  198.18.0.2: link up since 12:01:12 UTC; lag 0.0 s (0 pending)",
    ]
    shown = replication.shown(pair(here, there), "198.18.0.2", now=NOW)
    assert shown is not None
    psm = shown.tables[0]
    assert [(s.up, s.since, s.entries, s.pending, s.lag) for s in psm.nodes] == [
        (True, SINCE, 20, 0, 0.0),
        (True, SINCE + 7, 20, 2, 0.25),
    ]


def test_down_learning_unknown_and_not_heard() -> None:
    yesterday = SINCE - 86400
    here = status(table(20, pending=4, lag=None), up=False, since=yesterday)
    there = status(table(18), synced=False)
    assert lines(replication.shown(pair(here, there), "198.18.0.2", now=NOW)) == [
        "198.18.0.1: link down since 2026-06-18 12:01:05 UTC",
        "198.18.0.2: link up since 12:01:05 UTC, learning the peer's table",
        "CyberArk-PSM: entries: 20 here, 18 on the peer",
        # HAProxy says how many changes wait, not since when.
        "  198.18.0.1: link down since 2026-06-18 12:01:05 UTC; lag unknown (4 pending)",
        "  198.18.0.2: link up since 12:01:05 UTC, learning the peer's table; "
        "lag 0.0 s (0 pending)",
    ]
    # An engine that cannot say, a peer not heard yet, a table on one side only.
    shown = replication.shown(pair("unknown: the engine is down", None), "198.18.0.2", now=NOW)
    assert lines(shown) == [
        "198.18.0.1: unknown: the engine is down",
        "198.18.0.2: unknown: the peer has not been heard",
    ]
    shown = replication.shown(pair(status(), status(table(5))), "198.18.0.2", now=NOW)
    assert lines(shown)[2:] == [
        "CyberArk-PSM: entries: unknown here, 5 on the peer",
        "  198.18.0.1: link up since 12:01:05 UTC; lag unknown",
        "  198.18.0.2: link up since 12:01:05 UTC; lag 0.0 s (0 pending)",
    ]
    shown = replication.shown(pair(None, status(since=None, up=False)), "198.18.0.2", now=NOW)
    assert lines(shown) == [
        "198.18.0.1: not replicating",
        "198.18.0.2: link down: 198.18.0.2:7778 not reached yet",
    ]
    assert replication.shown(None, "", now=NOW) is None  # standalone


# --- the Watch: this node's engine, read every second -------------------------------------------


class Replicating(FakeEngine):
    """The tests' fake engine, whose replication the test sets: a status, None (not
    replicating), an EngineError, or a read that never ends (``hang``)."""

    def __init__(self, said: ReplicationStatus | EngineError | None = None) -> None:
        super().__init__()
        self.said = said
        self.hang = False
        self.reads = 0
        self.entries: dict[str, list[dict[str, Any]]] = {}
        self.cleared: list[str] = []

    async def replication(self) -> ReplicationStatus | None:
        self.reads += 1
        if self.hang:
            await asyncio.Event().wait()
        if isinstance(self.said, Exception):
            raise self.said
        return self.said

    async def persistence(self, service: str) -> list[dict[str, Any]]:
        return self.entries.get(service, [])

    async def clear_persistence(self, service: str) -> int:
        self.cleared.append(service)
        return len(self.entries.pop(service, []))


class Holder:
    def __init__(self, engine: Replicating) -> None:
        self.engine = engine


def test_the_watch_keeps_the_last_answer_and_an_engine_error_is_unknown(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        engine = Replicating(status(table(20)))
        holder = Holder(engine)
        watch = replication.Watch(holder, clock=lambda: SINCE)
        assert watch.said == "unknown: not read yet"
        assert await watch.read() == status(table(20))
        assert watch.read_at == SINCE
        engine.said = EngineError("the Runtime API did not answer")
        assert await watch.read() == "unknown: the Runtime API did not answer"
        assert await watch.read() == "unknown: the Runtime API did not answer"
        engine.said = None
        assert await watch.read() is None
        # An answer the engine could not read (a bug) is unknown too, and the watch goes on.
        engine.said = ValueError("show peers: no section 'balancer'")  # type: ignore[assignment]
        assert await watch.read() == "unknown: ValueError: show peers: no section 'balancer'"
        # The controller may start another engine: the watch reads whichever runs now.
        holder.engine = Replicating(status())
        assert await watch.read() == status()
        monkeypatch.setattr(replication, "READ_TIMEOUT", 0.05)
        holder.engine.hang = True
        assert await watch.read() == "unknown: the engine did not answer within 0.05 s"
        # Started, it reads by itself until stopped.
        holder.engine = engine
        engine.said, before = status(table(1)), engine.reads
        watch = replication.Watch(holder, interval=0.01)
        watch.start()
        for _ in range(500):
            if engine.reads >= before + 3:
                break
            await asyncio.sleep(0.01)
        await watch.stop()
        assert engine.reads >= before + 3
        assert watch.said == status(table(1))

    asyncio.run(scenario())
    unknown = [r.getMessage() for r in caplog.records if r.name == "balancer.pair.replication"]
    # Said when it becomes unknown, not at every read.
    assert unknown == [
        "persistence replication unknown: the Runtime API did not answer",
        "persistence replication unknown: ValueError: show peers: no section 'balancer'",
        "persistence replication unknown: the engine did not answer within 0.05 s",
    ]


# --- the switchover's gate ----------------------------------------------------------------------


class Peer:
    """The peer asked its status: what it says of its replication, or PeerError."""

    def __init__(self, said: replication.Said | PeerError) -> None:
        self.said = said
        self.asked = 0

    async def status(self) -> NodeView:
        self.asked += 1
        if isinstance(self.said, PeerError):
            raise self.said
        return node("198.18.0.2", "secondary", self.said)


class Time:
    """A clock that only sleeping moves, and what happens at each sleep (``then``)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.then: list[Any] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        if self.then:
            self.then.pop(0)()


def gate(engine: Replicating, peer: Peer, clock: Time) -> str | None:
    return asyncio.run(replication.in_sync(engine, peer, clock=clock, sleep=clock.sleep))


def test_the_gate_waits_while_changes_are_pending_and_goes_when_none_is() -> None:
    # HAProxy says how many changes wait, not since when: the gate waits for none.
    haproxy = status(table(20, pending=3, lag=None))
    engine, peer, clock = Replicating(haproxy), Peer(status(table(20))), Time()
    why = gate(engine, peer, clock)
    assert why == "this node has 3 changes the peer has not acknowledged (CyberArk-PSM 3)"
    assert 10.0 <= clock.now <= 10.0 + replication.SYNC_POLL  # the whole wait, and no more
    # The changes are acknowledged after a second: it goes then, without waiting longer.
    engine.said, clock = haproxy, Time()

    def acknowledged() -> None:
        engine.said = status(table(23))

    clock.then = [lambda: None] * 3 + [acknowledged]
    assert gate(engine, peer, clock) is None
    assert clock.now == 4 * replication.SYNC_POLL
    assert peer.asked > 0


@pytest.mark.parametrize(
    ("here", "there", "why"),
    [
        (status(),
         status(table(2, pending=1, lag=1.5), table(1, pending=2, lag=None, service="Web")),
         "the peer has 3 changes this node has not acknowledged, the oldest for 1.5 s "
         "(CyberArk-PSM 1, Web 2)"),
        (status(up=False), status(), "this node's replication link is down"),
        (status(), status(synced=False), "the peer has not yet learnt this node's whole table"),
        (status(synced=False), status(), "this node has not yet learnt the peer's whole table"),
        (EngineError("haproxy is not running"), status(),
         "this node: unknown: haproxy is not running"),
        (status(), "unknown: the engine did not answer within 2 s",
         "the peer: unknown: the engine did not answer within 2 s"),
    ],
)  # fmt: skip
def test_the_gate_says_why_the_tables_are_not_in_sync(
    here: ReplicationStatus | EngineError | None, there: Any, why: str
) -> None:
    assert gate(Replicating(here), Peer(there), Time()) == why


def test_a_peer_that_cannot_be_asked_is_said_at_once() -> None:
    clock, cut = Time(), PeerError("the peer at 198.18.0.2:9443 did not answer within 3 s")
    with pytest.raises(PeerError, match="did not answer within 3 s"):
        gate(Replicating(status()), Peer(cut), clock)
    assert clock.now == 0.0


@pytest.mark.parametrize(
    ("here", "there"),
    [
        (status(table(20)), status(table(20))),
        # Changes on their way under traffic, none waiting as long as a second: in sync.
        (status(table(20, pending=40, lag=0.1)), status(table(20, pending=7, lag=1.0))),
        # An engine that does not replicate (logged and audited when the pair starts it), or
        # a peer of a Balancer before replication: nothing to wait for.
        (None, status()),
        (status(), None),
    ],
)
def test_the_gate_goes_at_once_when_both_are_in_sync(
    here: ReplicationStatus | None, there: ReplicationStatus | None
) -> None:
    clock = Time()
    assert gate(Replicating(here), Peer(there), clock) is None
    assert clock.now == 0.0


# --- System Overview, the API and the command line ----------------------------------------------


@pytest.fixture
def web(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PairWeb]:
    with pair_web(tmp_path, monkeypatch) as running:
        yield running


def replication_rows(page: str) -> list[str]:
    found = part(page, 'id="replication-title"', "</table>")
    return [text(row) for row in re.findall(r"<tr data-replica=.*?</tr>", found, re.S)]


def test_the_overview_shows_each_table_on_both_nodes(web: PairWeb) -> None:
    assert "Persistence replication" not in web.client.get("/lbadmin/").text  # standalone
    # A moment of today: the page says the time alone (its date too just after midnight).
    here = status(table(20, pending=2, lag=0.25), since=time.time())
    web.paired("primary", pair(here, status(table(20))))
    page = web.client.get("/lbadmin/").text
    heading = part(page, 'id="replication-title"', "</h2>")
    assert text(heading + "</h2>").endswith("Persistence replication")
    assert "entries: 20 here, 20 on the peer" in text(part(page, f'data-table="{PSM}"', "</th>"))
    [this, peer] = replication_rows(page)
    assert re.fullmatch(
        r"CyberArk-PSM entries: 20 here, 20 on the peer 198\.18\.0\.1 \(this node\) "
        r"link up since (\d{4}-\d\d-\d\d )?\d\d:\d\d:\d\d UTC 20 lag 0\.2 s \(2 pending\)",
        this,
    ), this
    assert peer == ("198.18.0.2 link up since 2026-06-19 12:01:05 UTC 20 lag 0.0 s (0 pending)")
    # The refresh brings it too; an engine that cannot say, and the peer not heard.
    web.cluster.shown = pair("unknown: the engine is down", None)
    live = web.client.get("/lbadmin/overview/live", headers={"HX-Request": "1"}).text
    assert replication_rows(live) == [
        "No persistence table yet 198.18.0.1 (this node) unknown: the engine is down \N{EM DASH} "
        "\N{EM DASH}",
        "198.18.0.2 unknown: the peer has not been heard \N{EM DASH} \N{EM DASH}",
    ]


def test_the_api_serves_the_same_view(web: PairWeb) -> None:
    assert web.local.get("/api/v1/ha").json()["replication"] is None  # standalone
    web.paired("primary", pair(status(table(20)), status(table(19, pending=1, lag=0.5))))
    found = web.local.get("/api/v1/ha").json()
    assert found["pair"]["this"]["replication"] == {
        "peer": "198.18.0.2:7778",
        "up": True,
        "since": SINCE,
        "synced": True,
        "tables": [{"service": PSM, "entries": 20, "pending": 0, "lag": 0.0}],
    }
    assert found["pair"]["peer"]["replication"]["tables"][0]["pending"] == 1
    [shown] = found["replication"]["tables"]
    assert shown["service"] == PSM
    assert shown["entries"] == "entries: 20 here, 19 on the peer"
    assert [(s["node"], s["this"], s["up"], s["entries"], s["pending"], s["lag"], s["behind"])
            for s in shown["nodes"]] == [
        ("198.18.0.1", True, True, 20, 0, 0.0, "lag 0.0 s (0 pending)"),
        ("198.18.0.2", False, True, 19, 1, 0.5, "lag 0.5 s (1 pending)"),
    ]  # fmt: skip
    assert [n["link"] for n in found["replication"]["nodes"]] == [
        "link up since 2026-06-19 12:01:05 UTC",
        "link up since 2026-06-19 12:01:05 UTC",
    ]


@contextmanager
def command_line(web: PairWeb, data_dir: Path) -> Iterator[Any]:
    """The application on its Unix socket in ``data_dir``, as `balancer serve` serves it; a
    function that runs the `balancer` command there: exit status, stdout, stderr."""
    data_dir.mkdir()
    sock = unix_socket(api_socket(data_dir))
    server = listener(local(web.client.app))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]})
    thread.start()

    def balancer(*args: str) -> tuple[int, str, str]:
        done = subprocess.run(
            [sys.executable, "-m", "balancer", *args],
            env={**os.environ, "BALANCER_DIR": str(data_dir)},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        return done.returncode, done.stdout, done.stderr

    try:
        wait_for("the API to listen", lambda: server.started)
        yield balancer
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def test_ha_status_prints_each_table_on_both_nodes(web: PairWeb, tmp_path: Path) -> None:
    web.paired("primary", pair(status(table(20)), status(table(20, pending=2, lag=None))))
    with command_line(web, tmp_path / "cli") as balancer:
        code, out, err = balancer("ha", "status")
        assert (code, err) == (0, "")
        said = out.splitlines()
        at = said.index("persistence replication:")
        assert said[at : at + 4] == [
            "persistence replication:",
            "  table CyberArk-PSM: entries: 20 here, 20 on the peer",
            "    this node 198.18.0.1      link up since 2026-06-19 12:01:05 UTC; "
            "lag 0.0 s (0 pending)",
            "    peer      198.18.0.2      link up since 2026-06-19 12:01:05 UTC; "
            "lag unknown (2 pending)",
        ]
        web.cluster.shown = pair(status(), None)
        code, out, _ = balancer("ha", "status")
        said = out.splitlines()
        at = said.index("persistence replication: no persistence table yet")
        assert said[at + 1 : at + 3] == [
            "    this node 198.18.0.1      link up since 2026-06-19 12:01:05 UTC",
            "    peer      198.18.0.2      unknown: the peer has not been heard",
        ]


# --- balancer persistence on either node --------------------------------------------------------

ENTRY = {"client": "198.18.10.7", "server": "PSM1", "expires_in": 3500}


def test_persistence_lists_and_clears_on_the_secondary(web: PairWeb, tmp_path: Path) -> None:
    assert web.local.post("/api/v1/virtual-services", json=VIP).is_success
    engine = Replicating(status(table(1)))
    web.cluster.controller.engine = engine
    engine.entries[PSM] = [ENTRY]
    this = NodeView("198.18.0.2", "secondary", "passive", 5, "builtin", None, "in sync")
    web.paired("secondary", PairView(this=this, peer=None, link=None))
    with command_line(web, tmp_path / "cli") as balancer:
        code, out, err = balancer("persistence", "list", PSM)
        assert (code, out, err) == (0, f"{'198.18.10.7':>40} -> PSM1             3500s\n", "")
        # The data plane's table, not the cluster configuration: the Secondary clears its own.
        code, out, err = balancer("persistence", "clear", PSM)
        # ...and asks the peer to clear its own (here no link runs: it says so).
        said = "1 entries cleared\nthe peer's table was not cleared: the pair's link does not run\n"
        assert (code, out, err) == (0, said, "")
    assert engine.cleared == [PSM]
    [audited] = [e for e in web.store.audit_log(10) if e.action == "clear_persistence"]
    assert (audited.target, audited.detail) == (PSM, {"cleared": 1})


# --- in the Cluster (tests/ha/test_cluster.py's rig: the peer a stub over the pair's TLS) -------


def test_each_node_carries_its_replication_and_hears_the_peers(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with rig(tmp_path) as r:
            r.controller.engine = Replicating(status(table(20)))
            theirs = status(table(19, pending=1, lag=0.3))
            r.peer.view = dataclasses.replace(peer_view("passive"), replication=theirs)
            await r.cluster.form(r.pair)

            def heard() -> bool:
                view = r.cluster.view()
                assert view is not None
                return view.peer is not None and view.this.replication == status(table(20))

            await until("the peer heard, and this node's engine read", heard)
            view = r.cluster.view()
            assert view is not None
            assert view.peer is not None
            assert view.peer.replication == theirs
            # This node's status answer to the peer carries its own.
            app = FastAPI()
            app.include_router(peer_routes.status_router(r.cluster))
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://peer") as api:
                answer = (await api.get(STATUS)).json()
            assert answer["replication"] == status(table(20)).model_dump(mode="json")
            shown = replication.shown(view, str(PEER_ADDRESS), now=NOW)
            assert shown is not None
            assert [t.entries for t in shown.tables] == ["entries: 20 here, 19 on the peer"]

    asyncio.run(scenario())


def test_switchover_waits_for_the_tables_and_is_refused_when_they_stay_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def scenario() -> None:
        async with rig(tmp_path, state=State.ACTIVE) as r:
            engine = Replicating(status(table(20, pending=3, lag=None)))
            r.controller.engine = engine
            r.peer.view = dataclasses.replace(peer_view("passive"), replication=status(table(20)))
            await r.cluster.form(r.pair)
            monkeypatch.setattr(replication, "SYNC_WAIT", 0.5)
            refused = (
                r"^switchover: the persistence tables are not in sync \(this node has 3 changes "
                r"the peer has not acknowledged \(CyberArk-PSM 3\)\): nothing was done$"
            )
            with pytest.raises(PairError, match=refused):
                await r.cluster.switchover()
            assert r.done == ["this start"]  # nothing was done
            # Acknowledged while it waits: it goes then.
            monkeypatch.setattr(replication, "SYNC_WAIT", TIMEOUT)
            asked = asyncio.get_running_loop().create_task(r.cluster.switchover())
            before = engine.reads
            await until("the gate looked twice", lambda: engine.reads >= before + 2)
            assert not asked.done()
            assert r.done == ["this start"]
            engine.said = status(table(23))
            assert await asked == "the other node is now Active"
            assert r.done == ["this start", "this switchover"]

    asyncio.run(scenario())
