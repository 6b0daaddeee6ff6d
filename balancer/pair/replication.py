"""Persistence replication as an operator sees it, and the fail-back's wait for it.

Each node's engine replicates its persistence tables with the peer's (the pair's port 7778) and
says how that goes (``Engine.replication()``). ``Watch`` reads it every second while the node
is paired, so this node's ``NodeView`` carries it and the peer hears it over the link.
``shown`` puts both nodes' side by side, each table on each node in an operator's words, for
System Overview, ``balancer ha status`` and GET /api/v1/ha. ``in_sync`` is the switchover's
gate: a switchover (the fail-back to the Primary among them) first waits until both nodes'
tables are in sync.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from balancer.engines import EngineError
from balancer.pair.background import Background
from balancer.pair.status import NodeView, PairView
from balancer.state import ReplicationStatus, TableReplication

log = logging.getLogger(__name__)

# How often a paired node reads its engine's replication, and how long one read may take.
INTERVAL = 1.0
READ_TIMEOUT = 2.0
# A switchover waits this long at most for the tables to be in sync, looking this often.
SYNC_WAIT = 10.0
SYNC_POLL = 0.25
# Changes still flowing count as in sync: under traffic some are always on their way (the
# built-in engine sends every 50 ms; a renewed entry is a change), and those the Active node
# made reach the peer after the hand-over all the same. Pending changes are a backlog once the
# oldest has waited longer than this, or, where the engine cannot say how long (HAProxy), until
# none is pending.
SYNC_LAG = 1.0

# What a node says of its replication: the engine's status, why it is not known ("unknown:
# ..."), or None while its engine does not replicate (``NodeView.replication``).
Said = ReplicationStatus | str | None


class Replicating(Protocol):
    """The engine's door to replication (``balancer.engines.Engine``)."""

    async def replication(self) -> ReplicationStatus | None: ...


class HasEngine(Protocol):
    """What runs the engine (``balancer.controller.Controller``): it may start another one."""

    @property
    def engine(self) -> Replicating: ...


class Asked(Protocol):
    """The peer, asked now (``balancer.pair.link.Peer``); PeerError says why it did not say."""

    async def status(self) -> NodeView: ...


async def read(engine: Replicating) -> Said:
    """The engine's replication now: never an exception, an engine that cannot say is unknown."""
    try:
        return await asyncio.wait_for(engine.replication(), READ_TIMEOUT)
    except TimeoutError:
        return f"unknown: the engine did not answer within {READ_TIMEOUT:g} s"
    except (EngineError, OSError) as error:
        return f"unknown: {error or type(error).__name__}"
    except Exception as error:  # an engine's answer it could not read stops no one's view
        return f"unknown: {type(error).__name__}: {error}"


class Watch(Background):
    """Reads this node's engine's replication every ``interval`` seconds while started,
    keeping the last answer (``said``) and when it was read (``read_at``, Unix time)."""

    def __init__(
        self,
        controller: HasEngine,
        *,
        interval: float = INTERVAL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.controller = controller
        self.interval = interval
        self.clock = clock
        self.said: Said = "unknown: not read yet"
        self.read_at: float | None = None

    async def read(self) -> Said:
        said = await read(self.controller.engine)
        was_unknown = self.read_at is not None and isinstance(self.said, str)
        if isinstance(said, str) and not was_unknown:  # said once, not every second
            log.warning("persistence replication %s", said, extra={"event": "replication_unknown"})
        self.said, self.read_at = said, self.clock()
        return said

    async def _run(self) -> None:
        while True:
            await self.read()
            await asyncio.sleep(self.interval)


# --- the operator's view ------------------------------------------------------------------


@dataclass(frozen=True)
class Side:
    """One persistence table on one node."""

    node: str  # the node's address
    this: bool  # the node that answers
    up: bool | None  # its engine's link to the other's; None: not known
    since: float | None  # Unix time ``up`` last changed
    entries: int | None  # live entries there; None: not known
    pending: int | None  # changes made there the other node has not acknowledged
    lag: float | None  # seconds the oldest of them has waited; None: not known
    link: str  # "link up since 12:01:05 UTC", "link down since ...", "unknown: ..."
    behind: str  # "lag 0.0 s (0 pending)"


@dataclass(frozen=True)
class Table:
    """One persistence table (a sticky virtual service's) on both nodes, this one first."""

    service: str
    entries: str  # "entries: 20 here, 20 on the peer"
    nodes: tuple[Side, ...]


@dataclass(frozen=True)
class Node:
    """One node's engine's replication link, whatever tables it has."""

    node: str  # its address
    this: bool  # the node that answers
    link: str  # as ``Side.link``


@dataclass(frozen=True)
class Shown:
    """Persistence replication in the pair, as System Overview, ``balancer ha status`` and
    GET /api/v1/ha show it."""

    nodes: tuple[Node, ...]  # this node first
    tables: tuple[Table, ...]


def shown(view: PairView | None, peer: str, *, now: float) -> Shown | None:
    """Every table either node replicates, each on both nodes; None standalone. ``peer`` is
    the peer's address (``Pair.peer_address``), for a peer not heard yet; ``now`` (Unix time)
    says whether a moment is today's."""
    if view is None:
        return None
    here = view.this.replication
    there: Said = "unknown: the peer has not been heard"
    if view.peer is not None:
        there, peer = view.peer.replication, view.peer.address
    # Both nodes run the same configuration, so mostly the same tables; in this node's order.
    found = {t.service: None for said in (here, there) for t in _tables(said)}
    tables = []
    for service in found:
        mine, theirs = _table(here, service), _table(there, service)
        tables.append(
            Table(
                service=service,
                entries=f"entries: {_count(mine)} here, {_count(theirs)} on the peer",
                nodes=(
                    _side(view.this.address, True, here, mine, now),
                    _side(peer, False, there, theirs, now),
                ),
            )
        )
    nodes = (
        Node(view.this.address, True, link(here, now=now)),
        Node(peer, False, link(there, now=now)),
    )
    return Shown(nodes, tuple(tables))


def _tables(said: Said) -> tuple[TableReplication, ...]:
    return said.tables if isinstance(said, ReplicationStatus) else ()


def _table(said: Said, service: str) -> TableReplication | None:
    return next((t for t in _tables(said) if t.service == service), None)


def _count(table: TableReplication | None) -> str:
    return "unknown" if table is None else str(table.entries)


def _side(node: str, this: bool, said: Said, table: TableReplication | None, now: float) -> Side:
    status = said if isinstance(said, ReplicationStatus) else None
    return Side(
        node=node,
        this=this,
        up=None if status is None else status.up,
        since=None if status is None else status.since,
        entries=None if table is None else table.entries,
        pending=None if table is None else table.pending,
        lag=None if table is None else table.lag,
        link=link(said, now=now),
        behind=behind(table),
    )


def link(said: Said, *, now: float) -> str:
    """A node's replication link in an operator's words."""
    if said is None:
        return "not replicating"
    if isinstance(said, str):
        return said
    if said.since is None:
        return f"link down: {said.peer} not reached yet"
    words = f"link {'up' if said.up else 'down'} since {moment(said.since, now=now)}"
    if said.up and not said.synced:
        words += ", learning the peer's table"
    return words


def behind(table: TableReplication | None) -> str:
    """How far the peer is behind a node's table: the replication lag."""
    if table is None:
        return "lag unknown"
    if table.pending == 0:
        return "lag 0.0 s (0 pending)"
    lag = "lag unknown" if table.lag is None else f"lag {table.lag:.1f} s"
    return f"{lag} ({table.pending} pending)"


def moment(unix_time: float, *, now: float) -> str:
    """12:01:05 UTC today, else with its date: 2026-12-03 12:01:05 UTC."""
    today = time.gmtime(now)[:3] == time.gmtime(unix_time)[:3]
    shape = "%H:%M:%S UTC" if today else "%Y-%m-%d %H:%M:%S UTC"
    return time.strftime(shape, time.gmtime(unix_time))


# --- the switchover's gate ----------------------------------------------------------------


async def in_sync(
    engine: Replicating,
    peer: Asked,
    *,
    wait: float | None = None,
    poll: float = SYNC_POLL,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> str | None:
    """Wait up to ``wait`` seconds until both nodes' persistence tables are in sync: each
    engine's link up, the other's whole table learnt and no backlog (SYNC_LAG), on this node (its
    ``engine``) and on the peer (asked each time); an engine that does not replicate is not
    waited for. None once they are, else why not, as last seen; PeerError at once when the
    peer cannot be asked (no switchover goes to it either). Only reads: nothing is refused to
    clients meanwhile. ``wait`` None is SYNC_WAIT's, as it is when asked."""
    wait = SYNC_WAIT if wait is None else wait
    until = clock() + wait
    why: str | None = None
    for _ in range(math.ceil(wait / poll) + 1):
        why = out_of_sync("this node", await read(engine)) or await _peer(peer)
        if why is None or clock() >= until:
            break
        await sleep(poll)
    return why


async def _peer(peer: Asked) -> str | None:
    return out_of_sync("the peer", (await peer.status()).replication)


def out_of_sync(node: str, said: Said) -> str | None:
    """Why the tables of ``node`` ("this node" or "the peer") are not in sync with the other
    node's; None when they are."""
    other = "the peer" if node == "this node" else "this node"
    if said is None:
        # Nothing to wait for: an engine that cannot replicate is logged and audited when the
        # pair starts it (Cluster), shown "not replicating", and the pair runs on without it.
        return None
    if isinstance(said, str):
        return f"{node}: {said}"
    if not said.up:
        return f"{node}'s replication link is down"
    if not said.synced:
        return f"{node} has not yet learnt {other}'s whole table"
    behind = [t for t in said.tables if t.pending and (t.lag is None or t.lag > SYNC_LAG)]
    if not behind:
        return None
    total = sum(t.pending for t in behind)
    lags = [t.lag for t in behind if t.lag is not None]
    oldest = f", the oldest for {max(lags):.1f} s" if lags else ""
    where = ", ".join(f"{t.service} {t.pending}" for t in behind)
    return f"{node} has {total} changes {other} has not acknowledged{oldest} ({where})"
