"""The Engine protocol: the only door into a data plane, and a registry of engines by name."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from balancer.model import Config
from balancer.plan import Plan
from balancer.state import EngineStatus, ReplicationStatus
from balancer.validate import Problem


class EngineError(Exception):
    """The data plane could not be reached or could not do what was asked."""


class EngineRejected(EngineError):
    """The engine refused a configuration; the one it was running still runs."""


@dataclass(frozen=True)
class Replication:
    """Replicate the persistence tables with the HA pair's other node: this node's engine
    listens on ``local``:``port`` and reaches the peer's on ``peer``:``port``, both sides
    showing and requiring a certificate of the pair's authority (mutual TLS)."""

    local: str  # this node's own address (``Pair.local_address``)
    peer: str  # the peer's (``Pair.peer_address``)
    port: int  # ``Pair.replication_port``, the same on both nodes
    certificate: Path  # this node's pair certificate (PEM)...
    key: Path  # ...its key (PEM)...
    authority: Path  # ...and the pair's authority, the only one trusted (PEM)


class Engine(Protocol):
    name: str

    async def attach(self) -> int | None:
        """Find the running data plane or start one; return the revision it runs, if any."""

    def problems(self, config: Config, before: Config) -> list[Problem]:
        """What of ``config`` this engine cannot run on this node (HAProxy: more open files than
        its limit) and ``before``, what it was edited from, did not ask: asked at save, so that
        it is never found by a failed commit or start, yet an edit that asks no more than before
        is let through, or a node whose limit was lowered could not be put right."""

    async def apply(self, plan: Plan) -> None:
        """Make the data plane run ``plan.config`` by doing what ``plan`` says, without
        comparing configurations again; established connections are never dropped. A plan
        from a revision other than the one the engine runs is made again from that one."""

    async def status(self) -> EngineStatus:
        """What the data plane is doing now."""

    async def configuration(self) -> str:
        """What the data plane runs, in the engine's own terms (View Configuration)."""

    async def persistence(self, service: str) -> list[dict[str, Any]]:
        """The persistence table of ``service``: client, server, seconds left."""

    async def clear_persistence(self, service: str) -> int:
        """Forget every persistent client of ``service``; return how many."""

    async def replicate(self, replication: Replication | None) -> None:
        """Replicate persistence with the pair's other node as ``replication`` says, or stop
        (None, the node stands alone). Kept by the engine in its own directory, so an engine
        that starts again (or a management service that restarts) goes on as it was; given
        again unchanged, nothing happens. No connection is dropped."""

    async def replication(self) -> ReplicationStatus | None:
        """How replication goes; None while the engine does not replicate."""

    async def detach(self) -> None:
        """Let go of the data plane and leave it running (the daemon is restarting)."""

    async def stop(self) -> None:
        """Stop the data plane."""


def engine(name: str, data_dir: Path, workers: int = 1) -> Engine:
    """Engines by name, imported only when chosen; ``workers`` is the built-in engine's."""
    if name == "builtin":
        from balancer.engines.builtin import BuiltinEngine

        return BuiltinEngine(data_dir, workers)
    if name == "haproxy":
        from balancer.engines.haproxy import HaproxyEngine

        return HaproxyEngine(data_dir)
    raise EngineError(f"engine: {name!r} is not a known engine ({', '.join(ENGINES)})")


ENGINES = ("builtin", "haproxy")
