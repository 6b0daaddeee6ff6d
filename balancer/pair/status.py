"""What the operator sees of the pair: every page's status bar, System Overview and
``balancer ha status``."""

from __future__ import annotations

from dataclasses import dataclass

from balancer.ha.drift import Facts
from balancer.ha.split_brain import Alarm
from balancer.state import ReplicationStatus


@dataclass(frozen=True)
class NodeView:
    """One node of the pair as System Overview shows it."""

    address: str
    role: str  # primary | secondary
    state: str  # active | passive | fault | unknown (not heard, or keepalived not yet running)
    revision: int | None  # the revision its data plane runs
    engine: str  # builtin | haproxy
    engine_error: str | None  # None while the engine runs the applied revision
    # The cluster configuration and users on this node: "in sync", "behind by 2",
    # "failed: <reason>"; the Primary's own is "owner".
    sync: str
    # Its node settings that the pair does not replicate (balancer.pair.facts), as its status
    # answer to the peer carries them; None from a Balancer before them, or not asked.
    facts: Facts | None = None
    # Its engine replicating persistence to the peer's, as last read (balancer.pair.replication):
    # the engine's status, or why it is not known ("unknown: ..."); None: not replicating.
    replication: ReplicationStatus | str | None = None


@dataclass(frozen=True)
class PairView:
    """The pair as seen from this node: the status bar is ``this.role``, ``this.state`` and
    ``link``."""

    this: NodeView
    peer: NodeView | None  # None until the peer has been heard
    # Seconds since the peer last answered this node over the pair's link (or None if it never
    # has): the README's "link". Both nodes ask each other every second.
    link: float | None
    # The split-brain alarm as this node judges it; None while it is not watched.
    split_brain: Alarm | None = None
