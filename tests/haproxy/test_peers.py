"""Persistence replication between two HAProxy engines, as the two nodes of an HA pair run it:
real HAProxy processes on loopback, each node at an address of its own, with certificates of
one pair authority (balancer.ha.trust), and real clients making the entries through each
node's virtual service. A node's virtual IP differs from the other's here only because both
run on one host."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from balancer.engines import EngineRejected, Replication
from balancer.engines.haproxy import HAPROXY, HaproxyEngine, runtime
from balancer.engines.haproxy.limits import Limit
from balancer.engines.haproxy.render import (
    FALLBACK_ID,
    ID_SPACE,
    LOCAL_PEER,
    files,
    section,
    server_ids,
)
from balancer.ha import trust
from balancer.state import ReplicationStatus
from balancer.validate import parse
from tests.backends import Addresses, EchoServer, common_port, free_port
from tests.engine import Revisions, landing, real_server, settled, virtual_service, wait_for
from tests.engine.conftest import ATTACH_TIMEOUT, HAPROXY_MISSING, STOP_TIMEOUT
from tests.ha.test_trust import pair_node

pytestmark = pytest.mark.skipif(
    HAPROXY_MISSING, reason=f"HAProxy is not installed at {HAPROXY} (make test installs it)"
)

NOT_A_CERTIFICATE = "-----BEGIN CERTIFICATE-----\nbm90\n-----END CERTIFICATE-----\n"
RECORDED = Path(__file__).parent / "recorded"
SOURCE_IP = {"mode": "source_ip", "timeout": 600}
CHECK = {"type": "connect", "interval": 0.5, "timeout": 1, "rise": 1, "fall": 2}
NOW = datetime.now(UTC)
# HAProxy's peers give up on a peer they cannot reach after 5 s, then on the old worker after 5.
RESYNC = 15.0
# A peer refused reconnects every 5 s or so: two tries each way.
REFUSED_TRIES = 12.0


# --- recorded replies, parsed -----------------------------------------------------------------


def test_show_peers_of_two_nodes_with_entries_not_yet_acknowledged() -> None:
    """Node A made 3 clients' entries (4 changes each: made, used, connection ended...); 12
    were sent and, while the peer was stopped, 12 more of which the peer acknowledged none."""
    parsed = runtime.parse_peers((RECORDED / "show-peers-pair-pending.txt").read_text())
    assert parsed is not None
    flags, peers = parsed
    assert flags & runtime.PEERS_RESYNC_FINISHED == runtime.PEERS_RESYNC_FINISHED
    remote, local = peers
    assert (remote.name, remote.remote, remote.up, remote.status) == (
        "127.0.0.3",
        True,
        True,
        "ESTA",
    )
    assert remote.handshake == 8.0
    assert remote.pending == {"web": 12}
    assert (local.name, local.remote, local.up) == ("127.0.0.2", False, False)


def test_show_peers_of_a_node_whose_peer_was_refused() -> None:
    """The peer showed a certificate of another authority: no session, and HAProxy says the
    connection failed (CONN); the local peer is the one that took the tables at the reload."""
    parsed = runtime.parse_peers((RECORDED / "show-peers-pair-refused.txt").read_text())
    assert parsed is not None
    _, (remote, local) = parsed
    assert (remote.up, remote.status, remote.handshake) == (False, "CONN", 4.0)
    assert (local.remote, local.status) == (False, "ESTA")


def test_show_peers_of_the_standalone_section() -> None:
    parsed = runtime.parse_peers((RECORDED / "show-peers-synced.txt").read_text())
    assert parsed is not None
    flags, [local] = parsed
    assert (flags, local.name, local.remote, local.up) == (0x33, "local", False, False)
    assert runtime.parse_peers("") is None


# --- server ids -------------------------------------------------------------------------------


def service(labels: list[str], fallback: bool = False) -> Any:
    document: dict[str, Any] = {
        "label": "web",
        "ip": "10.0.0.1",
        "ports": "3389",
        "real_servers": [
            {"label": label, "ip": f"10.0.1.{n}"} for n, label in enumerate(labels, 1)
        ],
    }
    if fallback:
        document["fallback"] = {"ip": "10.0.0.99", "port": 3389}
    return parse({"virtual_services": [document]}).virtual_services[0]


def test_server_ids_stay_when_servers_are_added_or_removed() -> None:
    ids = server_ids(service(["PSM1", "PSM2", "PSM3"]))
    assert len(set(ids.values())) == 3
    assert all(0 < id_ < ID_SPACE for id_ in ids.values())
    removed = server_ids(service(["PSM1", "PSM3"]))
    assert removed == {"PSM1": ids["PSM1"], "PSM3": ids["PSM3"]}
    added = server_ids(service(["PSM4", "PSM1", "PSM2", "PSM3"]))
    assert {label: added[label] for label in ids} == ids
    assert added["PSM4"] not in ids.values()
    # The order of the servers in the service does not matter either.
    assert server_ids(service(["PSM3", "PSM2", "PSM1"])) == ids


def test_labels_whose_hashes_collide_get_the_next_free_id() -> None:
    first, second = _colliding_labels()
    ids = server_ids(service([second, first]))
    low, high = sorted([first, second])
    assert ids[high] == ids[low] % (ID_SPACE - 1) + 1
    assert server_ids(service([low]))[low] == ids[low]


def _colliding_labels() -> tuple[str, str]:
    """Two labels of one hash (the birthday bound makes it a few thousand tries)."""
    seen: dict[int, str] = {}
    for n in range(100_000):
        label = f"s{n}"
        digest = hashlib.sha256(label.encode()).digest()
        id_ = int.from_bytes(digest[:8], "big") % (ID_SPACE - 1) + 1
        if id_ in seen:
            return seen[id_], label
        seen[id_] = label
    raise AssertionError("no two labels collide")


def test_every_server_line_has_its_id() -> None:
    vs = service(["PSM1", "PSM2"], fallback=True)
    ids = server_ids(vs)
    lines = [line.split() for line in section(vs).splitlines() if "    server " in line]
    assert [(words[1], words[-2:]) for words in lines] == [
        ("PSM1", ["id", str(ids["PSM1"])]),
        ("PSM2", ["id", str(ids["PSM2"])]),
        ("fallback", ["id", str(FALLBACK_ID)]),
    ]


# --- two nodes --------------------------------------------------------------------------------


@dataclass
class Node:
    engine: HaproxyEngine
    address: str
    replication: Replication
    revisions: Revisions
    vip: tuple[str, int]


@dataclass
class Pair:
    a: Node
    b: Node
    servers: list[EchoServer]
    net: Addresses

    def document(self, node: Node, **settings: Any) -> dict[str, Any]:
        """The pair's one virtual service, at ``node``'s virtual IP."""
        servers = [real_server(s.name, s.address) for s in self.servers]
        settings.setdefault("persistence", SOURCE_IP)
        return virtual_service("web", node.vip, servers, **settings)

    async def apply(self, **settings: Any) -> None:
        """One commit on both nodes at once, as the HA pair's configuration sync makes it."""
        await asyncio.gather(
            *(node.revisions.apply(self.document(node, **settings)) for node in (self.a, self.b))
        )


def pair_files(data_dir: Path, authority: trust.Authority, address: str) -> tuple[Path, ...]:
    """A node's pair certificate, key and the authority, as pairing leaves them."""
    paired = pair_node(data_dir, authority, address)
    return paired.certificate_file, paired.key_file, trust.directory(data_dir) / trust.CA_FILE


def replication(node: Path, authority: trust.Authority, local: str, peer: str, port: int) -> Any:
    certificate, key, ca = pair_files(node, authority, local)
    return Replication(local, peer, port, certificate, key, ca)


@contextlib.asynccontextmanager
async def two_nodes(net: Addresses, root: Path, stranger: bool = False) -> AsyncIterator[Pair]:
    """Two nodes replicating, each running the virtual service ``web`` of two real servers;
    ``stranger``: node B's certificate is of another pair's authority."""
    authority = trust.make_ca(now=NOW)
    other = trust.make_ca(now=NOW) if stranger else authority
    here, there = net.ip(), net.ip()
    port = common_port([here, there])
    engines: list[HaproxyEngine] = []
    try:
        async with EchoServer("A", net.ip()) as a, EchoServer("B", net.ip()) as b:
            nodes = []
            for name, local, peer, by in (("a", here, there, authority), ("b", there, here, other)):
                engine = HaproxyEngine(root / name)
                engines.append(engine)
                await asyncio.wait_for(engine.attach(), ATTACH_TIMEOUT)
                settings = replication(root / name, by, local, peer, port)
                await engine.replicate(settings)
                vip = (net.ip(), free_port(net.ip()))
                nodes.append(Node(engine, local, settings, Revisions(engine), vip))
            pair = Pair(nodes[0], nodes[1], [a, b], net)
            await pair.apply()
            yield pair
    finally:
        for engine in engines:
            await asyncio.wait_for(engine.stop(), STOP_TIMEOUT)


async def entries(node: Node) -> dict[str, str]:
    """Client -> real server of ``node``'s table of ``web``."""
    return {e["client"]: e["server"] for e in await node.engine.persistence("web")}


async def clients(pair: Pair, node: Node, count: int) -> dict[str, str]:
    """``count`` clients from addresses of their own through ``node``: where each landed."""
    landed = {}
    for _ in range(count):
        source = pair.net.ip()
        landed[source] = await landing(node.vip, source)
    return landed


async def status(node: Node) -> ReplicationStatus:
    found = await node.engine.replication()
    assert found is not None
    return found


async def linked(node: Node) -> bool:
    found = await status(node)
    return found.up and found.synced


async def test_an_entry_made_on_one_node_appears_on_the_other(
    runner: asyncio.Runner, net: Addresses, tmp_path: Path
) -> None:
    async with two_nodes(net, tmp_path) as pair:
        for node in (pair.a, pair.b):
            await wait_for(lambda node=node: linked(node), RESYNC, "the link is up and synced")
        landed = await clients(pair, pair.a, 3)
        assert await settled(lambda: entries(pair.b), landed) == landed
        landed |= await clients(pair, pair.b, 3)
        assert await settled(lambda: entries(pair.a), landed) == landed
        # A client that comes back through the other node lands where it was.
        source, server = next(iter(landed.items()))
        assert await landing(pair.b.vip, source) == server

        seen = await status(pair.a)
        assert (seen.peer, seen.up, seen.synced) == (
            f"{pair.b.address}:{pair.a.replication.port}",
            True,
            True,
        )
        assert seen.since is not None
        [table] = seen.tables
        assert (table.service, table.entries) == ("web", 6)

        # HAProxy counts the files of the peer as the engine does (see test_limits).
        config = pair.a.revisions.config
        assert config is not None
        info = await pair.a.engine.master.cli(runtime.worker(None, "show info"))
        found = dict(re.findall(r"^(Maxsock|Maxconn): (\d+)$", info, re.MULTILINE))
        counted = files(config, Limit.of_this_process(), replicating=True)
        assert int(found["Maxsock"]) == counted.fixed + 2 * int(found["Maxconn"])

        # Every node names each server by the same id: the one its label gives.
        expected = server_ids(config.virtual_services[0])
        for node in (pair.a, pair.b):
            dump = await node.engine.master.cli(runtime.worker(None, "show servers state"))
            ids = {server: id_ for (_, server), id_ in runtime.server_ids(dump).items()}
            assert ids == expected


async def test_both_nodes_reloaded_at_once_lose_no_entry(
    runner: asyncio.Runner, net: Addresses, tmp_path: Path
) -> None:
    """The famous case: a commit reloads both nodes within a second while their workers have
    not finished learning the tables (just started, or reloaded moments ago). Such a worker
    hands the next one nothing, and both nodes would end empty."""
    async with two_nodes(net, tmp_path) as pair:
        nodes = (pair.a, pair.b)
        landed = await clients(pair, pair.a, 5) | await clients(pair, pair.b, 5)
        for node in nodes:
            assert await settled(lambda node=node: entries(node), landed) == landed
        flags = [await peers_flags(node) for node in nodes]
        assert all(
            f & runtime.PEERS_RESYNC_FINISHED != runtime.PEERS_RESYNC_FINISHED for f in flags
        ), "the workers have learnt the tables already: this test needs them still learning"
        workers = [(await n.engine.master.processes()).current for n in nodes]

        # Two commits in a row that reload (a health check is no runtime change).
        await pair.apply(health_check=CHECK)
        await pair.apply(health_check=CHECK | {"interval": 1})

        after = [(await n.engine.master.processes()).current for n in nodes]
        assert all(x != y for x, y in zip(workers, after, strict=True)), "both reloaded"
        for node in nodes:
            assert await entries(node) == landed
            assert (await status(node)).tables[0].entries == len(landed)


async def peers_flags(node: Node) -> int:
    parsed = runtime.parse_peers(await node.engine.master.cli(runtime.worker(None, "show peers")))
    assert parsed is not None
    return parsed[0]


async def test_a_node_started_again_from_empty_learns_the_whole_table(
    runner: asyncio.Runner, net: Addresses, tmp_path: Path
) -> None:
    """Node B's HAProxy stops (the node restarted); the engine of a new management service
    starts it again from the settings it kept, then the controller applies its revision.
    B learns every entry A has before it says it is synced."""
    async with two_nodes(net, tmp_path) as pair:
        a, b = pair.a, pair.b
        for node in (a, b):
            await wait_for(lambda node=node: linked(node), RESYNC, "the link is up and synced")
        landed = await clients(pair, a, 5)
        assert await settled(lambda: entries(b), landed) == landed
        await b.engine.stop()
        b.engine = HaproxyEngine(b.engine.paths.data_dir)
        b.revisions = Revisions(b.engine)
        assert await asyncio.wait_for(b.engine.attach(), ATTACH_TIMEOUT) is None
        assert not (await status(b)).synced, "no table runs yet"
        await b.revisions.apply(pair.document(b))
        assert await settled(lambda: entries(b), landed) == landed
        await wait_for(lambda: linked(b), RESYNC, "B is synced")
        # It goes on replicating: what is made on it reaches A.
        more = await clients(pair, b, 2)
        assert await settled(lambda: entries(a), landed | more) == landed | more


async def test_a_peer_of_another_authority_is_refused(
    runner: asyncio.Runner, net: Addresses, tmp_path: Path
) -> None:
    async with two_nodes(net, tmp_path, stranger=True) as pair:

        async def tries(node: Node) -> int:
            """Connections the node's worker opened to the peer (HAProxy's new_conn)."""
            text = await node.engine.master.cli(runtime.worker(None, "show peers"))
            return sum(int(n) for n in re.findall(r"\(remote,.*?new_conn=(\d+)", text, re.S))

        before = {id(node): await tries(node) for node in (pair.a, pair.b)}
        for node in (pair.a, pair.b):
            await wait_for(
                lambda node=node: _more(tries(node), before[id(node)]), REFUSED_TRIES, "a try"
            )
        landed = await clients(pair, pair.a, 2)
        # Each node tries the other again after the entries were made; none gets through.
        before = {id(node): await tries(node) for node in (pair.a, pair.b)}
        for node in (pair.a, pair.b):
            await wait_for(
                lambda node=node: _more(tries(node), before[id(node)]), REFUSED_TRIES, "a try"
            )
        assert await entries(pair.b) == {}
        assert await entries(pair.a) == landed
        for node in (pair.a, pair.b):
            assert not (await status(node)).up


async def test_standalone_again_and_replicating_again(
    runner: asyncio.Runner, net: Addresses, tmp_path: Path
) -> None:
    async with two_nodes(net, tmp_path) as pair:
        a, b = pair.a, pair.b
        for node in (a, b):
            await wait_for(lambda node=node: linked(node), RESYNC, "the link is up and synced")
        landed = await clients(pair, a, 3)
        assert await settled(lambda: entries(b), landed) == landed
        paths = a.engine.paths

        # Given again unchanged: nothing happens.
        reloads = (await a.engine.master.processes()).reloads
        await a.engine.replicate(a.replication)
        assert (await a.engine.master.processes()).reloads == reloads
        # A restarted management service finds the settings again.
        assert HaproxyEngine(paths.data_dir)._replication == a.replication
        assert paths.peer_bundle.stat().st_mode & 0o777 == 0o600

        await a.engine.replicate(None)
        assert await a.engine.replication() is None
        assert not any(
            p.exists() for p in (paths.replication, paths.peer_bundle, paths.peer_authority)
        )
        configuration = await a.engine.configuration()
        assert f"peer {LOCAL_PEER} unix@{paths.peers_socket}" in configuration
        assert "ssl crt" not in configuration
        assert HaproxyEngine(paths.data_dir)._replication is None
        # Its own entries stay, handed from the old worker to the new over the local peer.
        assert await entries(a) == landed
        alone = await clients(pair, a, 2)
        await wait_for(lambda: linked_down(b), RESYNC, "B sees A gone")
        assert await entries(b) == landed, "nothing crosses from a standalone node"

        await a.engine.replicate(a.replication)
        await wait_for(lambda: linked(a), RESYNC, "the link is up again")
        assert await settled(lambda: entries(b), landed | alone) == landed | alone


async def _more(count: Any, than: int) -> bool:
    return bool(await count > than)


async def linked_down(node: Node) -> bool:
    return not (await status(node)).up


async def test_a_certificate_haproxy_cannot_load_changes_nothing(
    runner: asyncio.Runner, net: Addresses, tmp_path: Path
) -> None:
    """HAProxy's own refusal (haproxy -c): what runs, and the settings kept, stay as they were."""
    engine = HaproxyEngine(tmp_path / "a")
    try:
        await asyncio.wait_for(engine.attach(), ATTACH_TIMEOUT)
        vip = (net.ip(), free_port(net.ip()))
        async with EchoServer("A", net.ip()) as a:
            await Revisions(engine).apply(
                virtual_service("web", vip, [real_server("A", a.address)], persistence=SOURCE_IP)
            )
            running = await engine.configuration()
            here, there = net.ip(), net.ip()
            settings = replication(tmp_path / "a", trust.make_ca(now=NOW), here, there, 7778)
            settings.certificate.write_text(NOT_A_CERTIFICATE)
            with pytest.raises(EngineRejected, match=r"^HAProxy: .*peer\.pem"):
                await engine.replicate(settings)
            assert await engine.configuration() == running
            assert await engine.replication() is None
            assert not engine.paths.replication.exists()
            assert await landing(vip) == "A"
    finally:
        await asyncio.wait_for(engine.stop(), STOP_TIMEOUT)
