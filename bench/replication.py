"""Persistence replication between two engines (issue 13): the replication lag at 1,000 new
clients a second, and the time a node started from empty takes to relearn 100,000 entries; on
each engine, engine to engine over loopback, with no keepalived and no management service.

Two engines of a kind, A on 127.6.0.1 and B on 127.6.0.2, replicate to each other on the pair's
port over mutual TLS, with certificates of a pair authority made here (``balancer.ha.trust``),
as ``Engine.replicate`` is given them by a paired node. Both run one virtual service (source-IP
persistence, the bench's two echo backends as real servers), on a VIP of each's own.

- Lag: clients, each from a loopback address of its own, open a connection through A's VIP at
  1,000 a second, each sending a few bytes and reading their echo; B's table is listed every
  50 ms. A client's lag runs from its connection made to its entry first listed on B (so it
  includes up to one listing period). Beside it, what A's engine says itself: its most changes
  pending and, where it can tell, the longest one waited.
- Relearn: B's engine is stopped (its table goes with it), the bench's load generator makes
  100,000 clients through A, each from an address of its own, and B's engine is started again
  with its configuration: the time from its start to its table holding every one of A's
  entries, and to its saying it has the peer's whole table (``synced``).

The share of entries on the survivor of a failover is measured on the HA pair in namespaces
(``bench.ha``): ``survivors`` below.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import statistics
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from balancer.engines import Engine, EngineError, Replication, engine
from balancer.ha import trust
from balancer.plan import make
from balancer.validate import parse
from bench.report import DASH, number
from bench.scenarios import BenchError, Tools

if TYPE_CHECKING:
    from tests.ha.cluster import Topology

ENGINES = {"builtin": "built-in", "haproxy": "HAProxy"}
NODES = ("127.6.0.1", "127.6.0.2")  # A, B
VIPS = ("127.6.0.11", "127.6.0.12")  # each engine's own: one loopback, two listeners
PORT = 17778  # the pair's port (7778 in a pair) away from anything else on loopback
SERVICE = "replicated"
RATE = 1000  # new clients a second
LAG_SECONDS = 5.0
LAG_CLIENTS = "127.7.0.1"  # the lag's clients count on from here...
RELEARN_CLIENTS = "127.8.0.1"  # ...and the relearnt ones from here (100,000: into 127.9.x)
RELEARN = 100_000
RELEARN_GOAL = 5.0  # seconds
LIST_EVERY = 0.05  # seconds between two listings of B's table
TICK = 0.005  # the lag's clients are started this often, those due each time
CLIENT_TIMEOUT = 5.0
SETTLE_TIMEOUT = 30.0  # both engines linked and synced before anything is measured
RELEARN_TIMEOUT = 60.0  # B given this long to relearn, at most
PLANT_CONCURRENCY = 64
PLANT_RUNS = 3  # load generator runs to make the 100,000 clients, at most...
PLANT_FIRST = 5.0  # ...the first this many seconds...
PLANT_LONGEST = 90.0  # ...none longer than this
CATCH_UP = 10.0  # seconds the lag's last entries are given to reach the peer
SHARE_AGE = 1.0  # the survivor's share counts entries at least this old at the failover


def configuration(vip: str, servers: Sequence[str], port: int) -> Any:
    return parse(
        {
            "virtual_services": [
                {
                    "label": SERVICE,
                    "ip": vip,
                    "ports": str(port),
                    "balancing": "round_robin",
                    "persistence": {"mode": "source_ip"},
                    # Health checks on, out of the way of the measurements.
                    "health_check": {"type": "connect", "interval": 600.0},
                    "real_servers": [
                        {"label": f"server{i + 1}", "ip": ip} for i, ip in enumerate(servers)
                    ],
                }
            ]
        }
    )


def addresses(first: str, count: int) -> list[str]:
    """``count`` loopback addresses from ``first``, skipping .0 and .255 as the load generator
    does."""
    found, at = [], ipaddress.IPv4Address(first)
    while len(found) < count:
        if int(at) & 0xFF not in (0, 255):
            found.append(str(at))
        at += 1
    return found


# --- the pair of engines -----------------------------------------------------------------------


def trust_files(work: Path) -> list[Replication]:
    """A pair authority and a certificate for each of NODES, as pairing leaves them in each
    node's directory; each node's Replication towards the other."""
    from tests.ha.test_trust import NOW, pair_node

    authority = trust.make_ca(now=NOW)
    found = []
    for local, peer in (NODES, NODES[::-1]):
        directory = trust.directory(work / local)
        pair_node(work / local, authority, local)
        found.append(
            Replication(
                local=local, peer=peer, port=PORT,
                certificate=directory / trust.NODE_FILE, key=directory / trust.NODE_KEY_FILE,
                authority=directory / trust.CA_FILE,
            )
        )  # fmt: skip
    return found


@dataclass
class Node:
    engine: Engine
    vip: str
    replication: Replication
    config: Any
    revision: int = 0

    async def start(self) -> None:
        await self.engine.attach()
        self.revision += 1
        await self.engine.apply(make(None, self.config, self.revision, None))
        await self.engine.replicate(self.replication)

    async def status(self) -> tuple[bool, int]:
        """Whether it has the peer's whole table, and its entries."""
        found = await self.engine.replication()
        if found is None:
            return False, 0
        return found.synced, sum(t.entries for t in found.tables if t.service == SERVICE)

    async def clients(self) -> set[str]:
        return {entry["client"] for entry in await self.engine.persistence(SERVICE)}


@contextlib.asynccontextmanager
async def pair(
    work: Path, kind: str, servers: Sequence[str], port: int
) -> AsyncIterator[list[Node]]:
    """Both engines of ``kind`` running and replicating, linked and synced; stopped after."""
    nodes = [
        Node(engine(kind, work / kind / local), vip, replication, configuration(vip, servers, port))
        for local, vip, replication in zip(NODES, VIPS, trust_files(work / kind), strict=True)
    ]
    try:
        for node in nodes:
            await node.start()
        await _until("both engines linked and synced", _linked(nodes), SETTLE_TIMEOUT)
        yield nodes
    finally:
        for node in nodes:
            with contextlib.suppress(EngineError):
                await node.engine.stop()


def _linked(nodes: Sequence[Node]) -> Callable[[], Any]:
    async def check() -> bool:
        found = [await node.engine.replication() for node in nodes]
        return all(f is not None and f.up and f.synced for f in found)

    return check


async def _until(what: str, ready: Callable[[], Any], timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await ready():
        if loop.time() > deadline:
            raise BenchError(f"{what}: not within {timeout:g} s")
        await asyncio.sleep(LIST_EVERY)


# --- the lag -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Lag:
    rate: float  # new clients a second, as made
    clients: int
    seconds: Sequence[float]  # each client's, from its connection to its entry on B
    unseen: int  # clients never listed on B
    failed: int  # clients whose connection failed
    pending: int  # the most changes A said were pending
    engine_lag: float | None  # the longest A said one waited; None if it cannot tell


async def _client(source: str, vip: str, port: int) -> float | None:
    """When the connection from ``source`` was made (its entry is made then), once its echo
    came back; None if it failed."""
    try:
        async with asyncio.timeout(CLIENT_TIMEOUT):
            reader, writer = await asyncio.open_connection(vip, port, local_addr=(source, 0))
            made = time.monotonic()
            try:
                writer.write(b"replicated\n")
                await reader.readexactly(11)
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except (OSError, TimeoutError, asyncio.IncompleteReadError):
        return None
    return made


async def lag(nodes: Sequence[Node], port: int) -> Lag:
    a, b = nodes
    sources = addresses(LAG_CLIENTS, int(RATE * LAG_SECONDS))
    made: dict[str, float | None] = {}
    seen: dict[str, float] = {}
    pending, engine_lag = 0, None if a.engine.name == "haproxy" else 0.0

    async def one(source: str) -> None:
        made[source] = await _client(source, a.vip, port)

    async def watch() -> None:
        nonlocal pending, engine_lag
        while True:
            listed = await b.clients()
            now = time.monotonic()
            for client in listed:
                seen.setdefault(client, now)
            found = await a.engine.replication()
            for table in found.tables if found is not None else ():
                pending = max(pending, table.pending)
                if table.lag is not None and engine_lag is not None:
                    engine_lag = max(engine_lag, table.lag)
            await asyncio.sleep(LIST_EVERY)

    watching = asyncio.create_task(watch())
    started = time.monotonic()
    running: set[asyncio.Task[None]] = set()
    try:
        for index, source in enumerate(sources):
            due = started + index / RATE
            if due > time.monotonic():
                await asyncio.sleep(max(TICK, due - time.monotonic()))
            task = asyncio.create_task(one(source))
            running.add(task)
            task.add_done_callback(running.discard)
        await asyncio.gather(*running)
        took = time.monotonic() - started
        for _ in range(int(CATCH_UP / LIST_EVERY)):  # the last ones still on their way
            if all(s in seen for s in sources if made[s]):
                break
            await asyncio.sleep(LIST_EVERY)
    finally:
        watching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watching
    good = {s: t for s, t in made.items() if t is not None}
    return Lag(
        rate=len(sources) / took,
        clients=len(sources),
        seconds=sorted(seen[s] - t for s, t in good.items() if s in seen),
        unseen=sum(s not in seen for s in good),
        failed=len(sources) - len(good),
        pending=pending,
        engine_lag=engine_lag,
    )


# --- relearning --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Relearn:
    entries: int  # A's, which B was to learn
    seconds: float | None  # from B's engine starting to its table holding them all
    synced: float | None  # ...to its saying synced
    started: float  # ...to its engine answering (a part of both)
    held: int  # what B had when measuring ended


async def _plant(tools: Tools, a: Node, port: int) -> int:
    """RELEARN clients through A, each from an address of its own; A's entries after. The
    generator runs for a time, not a count, and starts from the first address each run: a
    first short run finds the engine's rate, the next runs long enough for every address."""
    _, before = await a.status()  # the lag's clients
    duration, entries = PLANT_FIRST, before
    for _ in range(PLANT_RUNS):
        command = Tools(tools.loadgen, tools.backends, RELEARN_CLIENTS, RELEARN)
        process = await asyncio.create_subprocess_exec(
            *command.command(
                "connect", f"{a.vip}:{port}", concurrency=PLANT_CONCURRENCY, duration=duration,
                size=16,
            ),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, said = await process.communicate()
        if process.returncode != 0:
            raise BenchError(f"loadgen: exit {process.returncode}: {said.decode().strip()}")
        _, entries = await a.status()
        if entries >= before + RELEARN:
            return entries
        rate = max(entries - before, 1) / duration
        duration = min(PLANT_LONGEST, 1.5 * RELEARN / rate)
    raise BenchError(
        f"{RELEARN:,} clients through A: {entries - before:,} entries after {PLANT_RUNS} runs"
    )


async def relearn(nodes: Sequence[Node], tools: Tools, port: int) -> Relearn:
    a, b = nodes
    await b.engine.stop()
    entries = await _plant(tools, a, port)
    began = time.monotonic()
    await b.start()
    started = time.monotonic() - began
    full = synced = None
    held = 0
    deadline = began + RELEARN_TIMEOUT
    while time.monotonic() < deadline and (full is None or synced is None):
        said, held = await b.status()
        now = time.monotonic() - began
        if synced is None and said:
            synced = now
        if full is None and held >= entries:
            full = now
        await asyncio.sleep(LIST_EVERY)
    return Relearn(entries, full, synced, started, held)


# --- the survivor's share, on the HA pair in namespaces ----------------------------------------


@dataclass(frozen=True)
class Share:
    """Entries present on the survivor of a link cut, of those made before it."""

    old: int  # made at least SHARE_AGE before the cut...
    old_present: int  # ...and of those, on the survivor
    young: int
    young_present: int

    @property
    def percent(self) -> float | None:
        return 100.0 * self.old_present / self.old if self.old else None


SHARE_WAVES = 20  # clients come in this many waves...
SHARE_SPAN = 2.0  # ...over this many seconds before the cut


def survivors(pair: Topology, sources: Sequence[str]) -> Share:
    """Clients from ``sources`` connect through the RDP VIP in waves over SHARE_SPAN seconds,
    then the Active node's link is cut: which of their entries the survivor lists."""
    owner = pair.settled()
    other = pair.other(owner)
    size = max(1, len(sources) // SHARE_WAVES)
    made: dict[str, float] = {}
    began = time.monotonic()
    for wave in range(SHARE_WAVES):
        batch = sources[wave * size : (wave + 1) * size]
        if batch:
            pair.client.servers(batch)
            made.update(dict.fromkeys(batch, time.monotonic()))
        pause = began + (wave + 1) * SHARE_SPAN / SHARE_WAVES - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    cut = time.monotonic()
    owner.cut()
    try:
        pair.taken_by(other)
        listed = other.persistence()
    finally:
        owner.heal()
    pair.settled()
    old = [s for s, t in made.items() if cut - t >= SHARE_AGE]
    young = [s for s in made if s not in old]
    return Share(
        old=len(old),
        old_present=sum(s in listed for s in old),
        young=len(young),
        young_present=sum(s in listed for s in young),
    )


# --- the report --------------------------------------------------------------------------------


@dataclass
class Found:
    lag: Lag | None = None
    relearn: Relearn | None = None
    errors: list[str] = field(default_factory=list)


def _lag_cell(found: Lag | None) -> str:
    if found is None:
        return ""
    if not found.seconds:
        return f"no entry reached the peer ({found.failed:,} of {found.clients:,} failed)"
    values = found.seconds
    p99 = values[min(len(values) - 1, int(0.99 * len(values)))]
    cell = (
        f"{number(statistics.median(values) * 1000)} ms median, {number(p99 * 1000)} ms p99, "
        f"{number(values[-1] * 1000)} ms max ({found.clients:,} clients at "
        f"{number(found.rate)}/s); the engine: {found.pending:,} pending at most"
    )
    if found.engine_lag is not None:
        cell += f", {number(found.engine_lag * 1000)} ms waited at most"
    if found.unseen or found.failed:
        cell += f"; **{found.unseen:,} never reached the peer, {found.failed:,} failed**"
    return cell


def _relearn_cell(found: Relearn | None) -> str:
    if found is None:
        return ""
    if found.seconds is None:
        return f"**not relearnt**: {found.held:,} of {found.entries:,} in {RELEARN_TIMEOUT:g} s"
    verdict = "met" if found.seconds <= RELEARN_GOAL else "**not met**"
    synced = "never" if found.synced is None else f"{number(found.synced)} s"
    return (
        f"{number(found.seconds)} s for {found.entries:,} entries (synced said at {synced}; "
        f"the engine answered at {number(found.started)} s) · {verdict}"
    )


def share_cell(shares: Sequence[Share]) -> str:
    """The survivor's share over every run."""
    if not shares:
        return ""
    old = sum(s.old for s in shares)
    present = sum(s.old_present for s in shares)
    young = sum(s.young for s in shares)
    young_present = sum(s.young_present for s in shares)
    verdict = "met" if old and present == old else "**not met**"
    percent = f"{100.0 * present / old:.1f} %" if old else "none old enough"
    return (
        f"{percent} ({present:,} of {old:,}); younger: {young_present:,} of {young:,}, "
        f"{len(shares)} cut{'s' if len(shares) > 1 else ''} · {verdict}"
    )


def markdown(results: Mapping[str, Found]) -> list[str]:
    head = ["figure", "goal", *ENGINES.values()]
    rows = [
        ("replication lag at 1,000 new clients a second", DASH, _lag_cell, "lag"),
        (f"relearning {RELEARN:,} entries from empty", f"≤ {RELEARN_GOAL:g} s", _relearn_cell,
         "relearn"),
    ]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for title, goal, cell, key in rows:
        cells = [cell(getattr(results[e], key)) if e in results else "" for e in ENGINES]
        lines.append("| " + " | ".join([title, goal, *cells]) + " |")
    notes = [f"- {ENGINES[e]}: {error}" for e, found in results.items() for error in found.errors]
    return [
        "## Persistence replication between two engines (issue 13)",
        "",
        f"Two engines of a kind on loopback ({NODES[0]} and {NODES[1]}), replicating to each "
        f"other over mutual TLS with a pair authority's certificates, no keepalived. Lag: "
        f"{int(RATE * LAG_SECONDS):,} clients, each from an address of its own, through one "
        f"engine at {RATE:,} a second; the other's table listed every "
        f"{LIST_EVERY * 1000:g} ms, a client's lag from its connection to its entry first listed "
        f"there (so up to {LIST_EVERY * 1000:g} ms of it is the listing's period). Relearning: "
        f"the other engine stopped, {RELEARN:,} clients made through the first by the load "
        f"generator, the other started again: from its start to its table holding them all.",
        "",
        *lines,
        *(["", *notes] if notes else []),
    ]


def as_json(results: Mapping[str, Found]) -> dict[str, Any]:
    def lag_doc(found: Lag | None) -> dict[str, Any] | None:
        if found is None:
            return None
        return {
            "rate": found.rate, "clients": found.clients, "unseen": found.unseen,
            "failed": found.failed, "pending_max": found.pending,
            "engine_lag_max": found.engine_lag,
            "median": statistics.median(found.seconds) if found.seconds else None,
            "max": found.seconds[-1] if found.seconds else None,
        }  # fmt: skip

    return {
        kind: {
            "lag": lag_doc(found.lag),
            "relearn": None if found.relearn is None else vars(found.relearn),
            "relearn_goal": RELEARN_GOAL,
            "errors": found.errors,
        }
        for kind, found in results.items()
    }


# --- running it --------------------------------------------------------------------------------


async def measure(
    work: Path,
    tools: Tools,
    servers: Sequence[str],
    port: int,
    serve: Callable[[], AbstractAsyncContextManager[None]],
) -> dict[str, Found]:
    results: dict[str, Found] = {}
    async with serve():
        for kind, shown in ENGINES.items():
            found = results.setdefault(kind, Found())
            print(f"  persistence replication on {shown}", flush=True)
            try:
                async with pair(work, kind, servers, port) as nodes:
                    found.lag = await lag(nodes, port)
                    print(f"    lag: {_lag_cell(found.lag)}", flush=True)
                    found.relearn = await relearn(nodes, tools, port)
                    print(f"    relearn: {_relearn_cell(found.relearn)}", flush=True)
            except (BenchError, EngineError, OSError) as error:
                said = str(error).splitlines()[0] if str(error) else type(error).__name__
                found.errors.append(f"stopped early: {said}")
    return results


def run(
    work: Path,
    tools: Tools,
    servers: Sequence[str],
    port: int,
    serve: Callable[[], AbstractAsyncContextManager[None]],
) -> tuple[list[str], dict[str, Any]]:
    """The Markdown section and its JSON."""
    print("persistence replication between two engines", flush=True)
    for tool in (tools.loadgen, tools.backends):
        if not tool.exists():
            why = f"{tool} is missing: `make bench` builds it"
            return [*markdown({}), "", f"Not measured: {why}."], {"skipped": why}
    started = time.monotonic()
    results = asyncio.run(measure(work, tools, servers, port, serve))
    print(f"  took {time.monotonic() - started:.0f} s", flush=True)
    return markdown(results), as_json(results)
