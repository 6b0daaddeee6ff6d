"""Persistence replication between two built-in engines: real engine processes on loopback
addresses of their own (each node's address is its VIP too), real clients from distinct source
addresses, echo servers as the real servers, the pair's certificates from balancer.ha.trust.

The journal of a table is tested first on its own (pure, a fake clock)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import ssl
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest

from balancer.engines import EngineError, Replication, engine
from balancer.engines.builtin import BuiltinEngine
from balancer.engines.builtin.listeners import worker_of
from balancer.engines.builtin.persistence import StickTable
from balancer.engines.builtin.replication import Ledger, contexts
from balancer.ha import trust
from tests.backends import Addresses, EchoServer, common_port
from tests.engine import IO_TIMEOUT, Client, Revisions, landing, real_server, virtual_service
from tests.ha.test_trust import pair_node

NOW = datetime.now(UTC)
START_TIMEOUT = 30.0
CROSS_TIMEOUT = 10.0  # a bound on waiting for something to reach the other node, not a measure


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- the journal, alone -------------------------------------------------------------------------


def test_the_journal_says_each_change_once_and_never_what_the_peer_sent() -> None:
    clock = Clock()
    table = StickTable(600, 100, clock)
    table.stick("10.0.0.1", "A")  # before the journal: not in it
    table.journal(True)
    table.stick("10.0.0.2", "A")
    clock.now += 5
    table.stick("10.0.0.2", "B")  # used twice: said once, as it is now
    table.learn("10.0.0.3", "A", 2.0)  # the peer's
    assert table.drain("rdp") == [("rdp", "10.0.0.2", "B", 0.0)]
    assert table.drain("rdp") == []

    clock.now += 600  # 10.0.0.1 and 10.0.0.2 expire; 10.0.0.3 (the peer's) too
    assert table.sweep() == 3
    assert sorted(table.drain("rdp")) == [
        ("rdp", "10.0.0.1", None, 605.0),
        ("rdp", "10.0.0.2", None, 600.0),
        ("rdp", "10.0.0.3", None, 602.0),
    ]

    table.stick("10.0.0.4", "A")
    table.forget()  # the operator's clear: what came before it is not sent
    table.stick("10.0.0.5", "B")
    assert table.drain("rdp") == [("rdp", None, None, 0.0), ("rdp", "10.0.0.5", "B", 0.0)]
    table.journal(False)
    table.stick("10.0.0.6", "B")
    assert table.drain("rdp") == []


def test_the_peer_s_entry_is_taken_only_if_used_more_recently() -> None:
    clock = Clock()
    table = StickTable(600, 100, clock)
    table.stick("10.0.0.1", "A")
    clock.now += 10
    assert not table.learn("10.0.0.1", "B", 20.0)  # used before this node's
    assert table.learn("10.0.0.1", "B", 5.0)  # used since
    assert table.lookup("10.0.0.1") == "B"
    assert not table.learn("10.0.0.2", "A", 600.0)  # expired already
    table.hold("10.0.0.1")  # a connection open here: this node's copy is in use now
    assert not table.learn("10.0.0.1", "A", 0.0)
    table.unlearn("10.0.0.1", 0.0)
    assert table.lookup("10.0.0.1") == "B"
    table.release("10.0.0.1", "B")
    clock.now += 30
    table.unlearn("10.0.0.1", 60.0)  # the peer dropped a copy older than this one
    assert table.lookup("10.0.0.1") == "B"
    table.unlearn("10.0.0.1", 30.0)
    assert table.lookup("10.0.0.1") is None
    table.stick("10.0.0.3", "A")
    clock.now += 1
    assert table.clear(0.5, journaled=False) == 1  # the peer's clear, half a second ago
    assert not table.learn("10.0.0.3", "A", 0.7)  # used before that clear


def test_a_long_session_s_entry_is_renewed_before_it_expires() -> None:
    clock = Clock()
    table = StickTable(600, 100, clock)
    table.journal(True)
    table.stick("10.0.0.1", "A")
    table.hold("10.0.0.1")
    table.drain("rdp")
    clock.now += 590
    assert table.sweep(ahead=5) == 0
    assert table.drain("rdp") == []
    assert table.sweep(ahead=20) == 0
    assert table.drain("rdp") == [("rdp", "10.0.0.1", "A", 0.0)]


def test_the_peer_s_entries_go_to_the_worker_the_kernel_gives_the_client() -> None:
    sources = [f"127.0.{a}.{b}" for a in (0, 1, 200) for b in (1, 2, 3, 254)]
    for count in (2, 3, 5):
        assert [worker_of(s, count) for s in sources] == [
            int(ip_address(s)) % count for s in sources
        ]
    assert worker_of("2001:db8::1:5", 2) == (0x10005 % 2)  # the last 32 bits of IPv6


def test_pending_changes_are_settled_by_acknowledgements_or_by_the_whole_table() -> None:
    ledger = Ledger()
    ledger.add(1, 10.0, [("rdp", "10.0.0.1", "A", 0.0), ("web", "10.0.0.1", "A", 0.0)])
    ledger.add(2, 11.0, [("rdp", "10.0.0.2", "A", 0.0)])
    assert ledger.owed("rdp", 12.0) == (2, 2.0)
    ledger.ack(1)
    assert ledger.owed("rdp", 12.0) == (1, 1.0)
    assert ledger.owed("web", 12.0) == (0, 0.0)
    ledger.apart()  # the link went down: owed to the next whole table, and counted meanwhile
    ledger.add(None, 13.0, [("rdp", None, None, 0.0)])
    ledger.ack(99)  # an old connection's acknowledgement settles nothing now
    assert ledger.owed("rdp", 14.0) == (2, 3.0)
    ledger.settle_with(60)
    ledger.add(61, 15.0, [("web", "10.0.0.3", "B", 0.0)])
    ledger.ack(60)
    assert ledger.owed("rdp", 16.0) == (0, 0.0)
    assert ledger.owed("web", 16.0) == (1, 1.0)


# --- two engines --------------------------------------------------------------------------------


@dataclass
class Node:
    engine: BuiltinEngine
    address: str  # the node's own, and its VIP
    replication: Replication
    revisions: Revisions

    @property
    def vip(self) -> tuple[str, int]:
        return self.address, self.replication.port + 1

    async def entries(self) -> dict[str, str]:
        return {e["client"]: e["server"] for e in await self.engine.persistence("rdp")}

    async def start(self, document: dict[str, Any]) -> None:
        await asyncio.wait_for(self.engine.attach(), START_TIMEOUT)
        self.revisions = Revisions(self.engine)
        await self.revisions.apply(document)
        await self.engine.replicate(self.replication)


@dataclass
class Pair:
    a: Node
    b: Node
    servers: list[EchoServer]
    net: Addresses

    def service(self, node: Node, **settings: Any) -> dict[str, Any]:
        servers = [real_server(s.name, s.address) for s in self.servers]
        settings.setdefault("persistence", {"mode": "source_ip", "timeout": 600})
        return virtual_service("rdp", node.vip, servers, **settings)


@asynccontextmanager
async def two_nodes(
    root: Path, workers: int = 1, *, start_b: bool = True, stranger: bool = False
) -> AsyncIterator[Pair]:
    """Nodes a and b replicating (b only if ``start_b``), each running the sticky service
    "rdp" on its own address over the same two real servers; ``stranger``: b's certificate is
    from another pair's authority."""
    net = Addresses()
    addresses = [net.ip(), net.ip()]
    port = common_port(addresses)
    authority = trust.make_ca(now=NOW)
    nodes = []
    for name, local, peer in (("a", *addresses), ("b", *reversed(addresses))):
        data_dir = root / name
        signer = trust.make_ca(now=NOW) if stranger and name == "b" else authority
        pair_node(data_dir, signer, local)
        pair_dir = trust.directory(data_dir)
        replication = Replication(
            local=local,
            peer=peer,
            port=port,
            certificate=pair_dir / trust.NODE_FILE,
            key=pair_dir / trust.NODE_KEY_FILE,
            authority=pair_dir / trust.CA_FILE,
        )
        built = engine("builtin", data_dir, workers)
        assert isinstance(built, BuiltinEngine)
        nodes.append(Node(built, local, replication, Revisions(built)))
    async with AsyncExitStack() as stack:
        servers = [
            await stack.enter_async_context(EchoServer(name, net.ip())) for name in ("A", "B")
        ]
        pair = Pair(nodes[0], nodes[1], servers, net)
        for node in nodes:
            stack.push_async_callback(node.engine.stop)
        await pair.a.start(pair.service(pair.a))
        if start_b:
            await pair.b.start(pair.service(pair.b))
        try:
            yield pair
        except BaseException:
            for name in ("a", "b"):
                log = root / name / "logs" / "engine.log"
                if log.exists():
                    print(f"--- {log}", *log.read_text().splitlines()[-30:], sep="\n")
            raise


async def eventually(what: str, check: Any, timeout: float = CROSS_TIMEOUT) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.05)


async def linked(pair: Pair) -> None:
    async def up() -> bool:
        for node in (pair.a, pair.b):
            status = await node.engine.replication()
            if status is None or not status.up or not status.synced:
                return False
        return True

    await eventually("both directions up and synced", up)


async def same_entries(pair: Pair, expected: dict[str, str] | None = None) -> dict[str, str]:
    """Wait until both nodes hold the same entries (``expected``, if given); return them."""
    found: dict[str, str] = {}

    async def same() -> bool:
        nonlocal found
        found = await pair.a.entries()
        wanted = found if expected is None else expected
        return found == wanted and await pair.b.entries() == wanted

    await eventually(f"both nodes hold {expected or 'the same entries'}", same)
    return found


def run(scenario: Any) -> None:
    asyncio.run(scenario)


@pytest.mark.parametrize("workers", [1, 2])
def test_new_entries_renewals_and_a_clear_cross(tmp_path: Path, workers: int) -> None:
    async def scenario() -> None:
        async with two_nodes(tmp_path, workers) as pair:
            await linked(pair)
            sources = [pair.net.ip() for _ in range(6)]
            landed = {source: await landing(pair.a.vip, source) for source in sources}
            assert set(landed.values()) == {"A", "B"}
            await same_entries(pair, landed)
            # b sends each of them where a did: the entry crossed, not b's own choice
            for source in sources:
                assert await landing(pair.b.vip, source) == landed[source]

            before = {e["client"]: e["expires_in"] for e in await pair.b.engine.persistence("rdp")}
            await asyncio.sleep(1.0)  # b's copy is a second older, unless a renewal crosses
            await landing(pair.a.vip, sources[0])

            async def renewed() -> bool:
                entries = await pair.b.engine.persistence("rdp")
                left = next(e["expires_in"] for e in entries if e["client"] == sources[0])
                return bool(left >= before[sources[0]] - 0.5)

            await eventually("the renewal reached b", renewed)

            assert await pair.a.engine.clear_persistence("rdp") == len(sources)
            await same_entries(pair, {})
            status = await pair.a.engine.replication()
            assert status is not None
            assert [t.service for t in status.tables] == ["rdp"]

    run(scenario())


def test_an_entry_dropped_when_it_expires_is_dropped_on_the_peer(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with two_nodes(tmp_path) as pair:
            # a forgets a client after a second, b (alone) would keep it ten minutes
            short = pair.service(pair.a, persistence={"mode": "source_ip", "timeout": 1})
            await pair.a.revisions.apply(short)
            await linked(pair)
            source = pair.net.ip()
            landed = await landing(pair.a.vip, source)
            await eventually("the entry reached b", lambda: _has(pair.b, source, landed))
            # a's sweep (every 10 s) drops it; b drops it as it hears so
            await eventually("b dropped it after a", lambda: _lacks(pair.b, source), timeout=30.0)

    run(scenario())


def test_an_entry_the_peer_drops_is_dropped_from_the_relay_core_too(tmp_path: Path) -> None:
    """The relay's own table (the compiled core's, by default) forgets what the peer dropped,
    not only the table that lists: with its server drained, the client is balanced afresh."""

    async def scenario() -> None:
        async with two_nodes(tmp_path) as pair:
            # a keeps one client: a second one makes it drop the first, and say so to b
            small = {"mode": "source_ip", "timeout": 600, "table_size": 1}
            await pair.a.revisions.apply(pair.service(pair.a, persistence=small))
            await linked(pair)
            first, second = pair.net.ip(), pair.net.ip()
            landed = await landing(pair.a.vip, first)
            await eventually("the entry reached b", lambda: _has(pair.b, first, landed))
            await landing(pair.a.vip, second)
            await eventually("b dropped it after a", lambda: _lacks(pair.b, first))
            drained = pair.service(pair.b)
            for rs in drained["real_servers"]:
                rs["state"] = "drain" if rs["label"] == landed else "online"
            await pair.b.revisions.apply(drained)
            assert await landing(pair.b.vip, first) != landed

    run(scenario())


async def _has(node: Node, client: str, server: str) -> bool:
    return (await node.entries()).get(client) == server


async def _lacks(node: Node, client: str) -> bool:
    return client not in await node.entries()


def test_both_nodes_keep_the_entry_used_last(tmp_path: Path) -> None:
    """Split brain: each node sends the same client to its own server while they are apart;
    once together again both keep the one used more recently, whichever way it crosses."""

    async def scenario() -> None:
        async with two_nodes(tmp_path) as pair:
            # a sends new clients to A only, b to B only
            for node, halted in ((pair.a, "B"), (pair.b, "A")):
                document = pair.service(node)
                for rs in document["real_servers"]:
                    rs["state"] = "halt" if rs["label"] == halted else "online"
                await node.revisions.apply(document)
            await linked(pair)
            for node in (pair.a, pair.b):
                await node.engine.replicate(None)
                assert await node.engine.replication() is None
            first, second = pair.net.ip(), pair.net.ip()
            assert await landing(pair.a.vip, first) == "A"  # first: a, then b
            assert await landing(pair.a.vip, second) == "A"
            assert await landing(pair.b.vip, second) == "B"  # second: b, then a
            await asyncio.sleep(0.1)  # a's use of ``second`` is the later by this much
            assert await landing(pair.b.vip, first) == "B"
            assert await landing(pair.a.vip, second) == "A"
            for node in (pair.a, pair.b):
                await node.engine.replicate(node.replication)
            await same_entries(pair, {first: "B", second: "A"})

    run(scenario())


@pytest.mark.parametrize("workers", [1, 2])
def test_a_node_that_starts_learns_the_whole_table(tmp_path: Path, workers: int) -> None:
    async def scenario() -> None:
        async with two_nodes(tmp_path, workers, start_b=False) as pair:

            async def synced_alone() -> bool:
                status = await pair.a.engine.replication()
                return status is not None and status.synced and not status.up

            await eventually("a finds b absent: synced, nothing to learn", synced_alone)
            sources = [pair.net.ip() for _ in range(200)]
            landed = {source: await landing(pair.a.vip, source) for source in sources}
            await pair.b.start(pair.service(pair.b))
            await linked(pair)
            assert await same_entries(pair, landed) == landed
            status = await pair.a.engine.replication()
            assert status is not None
            assert [(t.service, t.entries) for t in status.tables] == [("rdp", 200)]

            async def settled() -> bool:
                status = await pair.a.engine.replication()
                return status is not None and status.tables[0].pending == 0

            await eventually("a's changes acknowledged", settled)

    run(scenario())


def test_replication_stops_and_an_engine_started_again_goes_on(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with two_nodes(tmp_path) as pair:
            await linked(pair)
            await pair.a.engine.replicate(pair.a.replication)  # the same again: nothing
            assert (await pair.a.engine.replication()).up  # type: ignore[union-attr]
            missing = dataclasses.replace(pair.a.replication, key=tmp_path / "gone.pem")
            with pytest.raises(EngineError, match=r"gone\.pem: cannot be read"):
                await pair.a.engine.replicate(missing)
            assert (await pair.a.engine.replication()).up  # type: ignore[union-attr]

            # An engine that starts again (as after a crash) is given its configuration by
            # the management service, and only then can it keep the peer's entries.
            before = pair.net.ip()
            landed = {before: await landing(pair.b.vip, before)}
            await same_entries(pair, landed)
            await pair.a.engine.stop()
            await asyncio.wait_for(pair.a.engine.attach(), START_TIMEOUT)
            await asyncio.sleep(0.5)  # time enough for the link to come up before the apply
            await pair.a.revisions.apply(pair.service(pair.a, client_timeout=7200))
            await linked(pair)  # from its replication.json
            await same_entries(pair, landed)
            after = pair.net.ip()
            landed[after] = await landing(pair.b.vip, after)
            await same_entries(pair, landed)

            await pair.a.engine.replicate(None)
            assert await pair.a.engine.replication() is None
            assert not (pair.a.engine.data_dir / "replication.json").exists()

            async def down() -> bool:
                status = await pair.b.engine.replication()
                return status is not None and not status.up

            await eventually("b sees the link down", down)

    run(scenario())


def test_a_table_new_on_this_node_learns_what_the_peer_already_has(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with two_nodes(tmp_path) as pair:
            await pair.a.revisions.apply(pair.service(pair.a, persistence={"mode": "none"}))
            await linked(pair)
            source = pair.net.ip()
            landed = await landing(pair.b.vip, source)
            await asyncio.sleep(0.5)  # b's connection ended and its changes were sent...
            await eventually("...and a refused them", lambda: _acknowledged(pair.b))
            assert await pair.a.engine.persistence("rdp") == []  # no table to keep it in
            await pair.a.revisions.apply(pair.service(pair.a))  # persistence again, as b's
            await same_entries(pair, {source: landed})

    run(scenario())


def test_an_entry_for_a_server_not_run_here_is_not_kept_until_it_runs(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with two_nodes(tmp_path) as pair:
            only_a = pair.service(pair.a)
            only_a["real_servers"] = only_a["real_servers"][:1]
            await pair.a.revisions.apply(only_a)
            b_to_b = pair.service(pair.b)
            b_to_b["real_servers"][0]["state"] = "halt"
            await pair.b.revisions.apply(b_to_b)
            await linked(pair)
            source = pair.net.ip()
            assert await landing(pair.b.vip, source) == "B"
            await asyncio.sleep(0.5)  # b's connection ended and its changes were sent...
            await eventually("...and a refused them", lambda: _acknowledged(pair.b))
            assert await pair.a.entries() == {}
            await pair.a.revisions.apply(pair.service(pair.a))  # B runs here too now
            await same_entries(pair, {source: "B"})

    run(scenario())


async def _acknowledged(node: Node) -> bool:
    status = await node.engine.replication()
    return status is not None and status.tables[0].pending == 0


def test_a_peer_that_falls_silent_is_down_and_catches_up_when_it_wakes(tmp_path: Path) -> None:
    """A hung peer (SIGSTOP) sends no FIN: its silence alone takes the link down."""

    async def scenario() -> None:
        async with two_nodes(tmp_path) as pair:
            await linked(pair)
            pid = (await pair.b.engine.status()).pid

            async def down() -> bool:
                status = await pair.a.engine.replication()
                return status is not None and not status.up

            os.kill(pid, signal.SIGSTOP)
            try:
                await eventually("a finds the link down", down)
                source = pair.net.ip()
                landed = await landing(pair.a.vip, source)
            finally:
                os.kill(pid, signal.SIGCONT)
            await linked(pair)
            await same_entries(pair, {source: landed})

    run(scenario())


def test_only_the_peer_with_the_pair_s_certificate_is_heard(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with two_nodes(tmp_path, start_b=False) as pair:
            a, b = pair.a.replication, pair.b.replication
            _, client = contexts(b)  # b's certificate, from the pair's authority

            async def hello(source: str, context: ssl.SSLContext) -> bytes:
                async with asyncio.timeout(IO_TIMEOUT):
                    reader, writer = await asyncio.open_connection(
                        a.local, a.port, ssl=context, local_addr=(source, 0)
                    )
                    try:
                        writer.write(b'{"hello": 1}\n{"seq": 7, "changes": [], "end": true}\n')
                        return await reader.readline()
                    finally:
                        writer.close()

            await eventually("a listens", lambda: _listens(a.local, a.port))
            assert json.loads(await hello(b.local, client)) == {"ack": 7}
            assert await hello(pair.net.ip(), client) == b""  # from another address

            stranger = tmp_path / "stranger"
            pair_node(stranger, trust.make_ca(now=NOW), b.local)
            pair_dir = trust.directory(stranger)
            _, other = contexts(
                Replication(
                    b.local,
                    a.local,
                    a.port,
                    pair_dir / trust.NODE_FILE,
                    pair_dir / trust.NODE_KEY_FILE,
                    pair_dir / trust.CA_FILE,
                )
            )
            with pytest.raises(ssl.SSLError):
                await hello(b.local, other)

    run(scenario())


async def _listens(host: str, port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection(host, port)
    except OSError:
        return False
    writer.close()
    return True


@pytest.mark.parametrize("workers", [2])
def test_every_worker_takes_part(tmp_path: Path, workers: int) -> None:
    async def scenario() -> None:
        async with two_nodes(tmp_path, workers) as pair:
            await linked(pair)
            sources = [pair.net.ip() for _ in range(8)]  # even and odd: both workers
            clients = [await Client.open(pair.a.vip, source) for source in sources]
            landed = {source: c.name for source, c in zip(sources, clients, strict=True)}
            for client in clients:
                await client.close()
            await same_entries(pair, landed)
            for source in sources:
                assert await landing(pair.b.vip, source) == landed[source]

            # A worker of b that dies loses its part of the table, and learns it again.
            workers_of_b = await pair.b.engine.worker_status()
            os.kill(workers_of_b[1]["pid"], signal.SIGKILL)

            async def restarted() -> bool:
                now = await pair.b.engine.worker_status()
                return now[1]["pid"] not in (None, workers_of_b[1]["pid"]) and bool(
                    now[1]["status"]
                )

            await eventually("b's worker started again", restarted)
            await same_entries(pair, landed)

    run(scenario())
