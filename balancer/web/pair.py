"""What the WebUI shows of the HA pair (``Cluster.view()``): every page's status bar (this node's
role, state and link, the guide's), System Overview's row for each node, and where the Primary's
WebUI answers, for the Secondary's read-only banner.

Each state is a word, and a shape and a colour (``state-active`` and so on with the ``.mark``
of System Overview's real servers).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from balancer.model import Pair
from balancer.pair.status import NodeView, PairView
from balancer.web.units import moment

# keepalived's states in the guide's words; "unknown" until keepalived has said, or the peer
# has been heard.
STATES = {"active": "Active", "passive": "Passive", "fault": "Fault", "unknown": "Unknown"}
ROLES = {"primary": "Primary", "secondary": "Secondary"}
OTHER = {"primary": "secondary", "secondary": "primary"}


@dataclass(frozen=True)
class StatusBar:
    role: str
    state: str  # the word
    state_class: str  # state-active, ...
    link: str  # "0.4 s ago", "never"
    # The peer not heard for longer than the status requests' own pace allows.
    link_lost: bool
    # Both nodes hold the floating IPs: since when, and the evidence; None while they do not.
    split_brain: str | None = None


@dataclass(frozen=True)
class NodeRow:
    address: str
    this: bool  # the node this page is served by
    role: str
    state: str
    state_class: str
    revision: str
    sync: str
    engine: str
    engine_error: str | None


# Both nodes ask each other every second; two missed answers is worth a look.
LINK_LOST = 2.5  # s


def status_bar(view: PairView | None) -> StatusBar | None:
    if view is None:
        return None
    state = _state(view.this.state)
    return StatusBar(
        role=ROLES.get(view.this.role, view.this.role),
        state=STATES[state],
        state_class=f"state-{state}",
        link=seconds_ago(view.link),
        link_lost=view.link is None or view.link > LINK_LOST,
        split_brain=_split_brain(view),
    )


def _split_brain(view: PairView) -> str | None:
    alarm = view.split_brain
    if alarm is None or not alarm.raised:
        return None
    since = "" if alarm.since is None else f"since {moment(alarm.since)}: "
    return f"both nodes hold the floating IPs {since}{'; '.join(alarm.evidence)}"


def seconds_ago(link: float | None) -> str:
    if link is None:
        return "never heard"
    return f"{link:.1f} s ago" if link < 10 else f"{link:.0f} s ago"


def nodes(view: PairView | None, pair: Pair | None) -> tuple[NodeRow, ...]:
    """Both nodes, this one first; a peer not heard yet by its address and role alone."""
    if view is None or pair is None:
        return ()
    peer = view.peer
    if peer is None:
        peer_row = NodeRow(
            address=str(pair.peer_address),
            this=False,
            role=ROLES[OTHER[pair.role]],
            state="not heard yet",
            state_class="state-unknown",
            revision="\N{EM DASH}",
            sync="\N{EM DASH}",
            engine="\N{EM DASH}",
            engine_error=None,
        )
    else:
        peer_row = _row(peer, this=False)
    return (_row(view.this, this=True), peer_row)


def _row(node: NodeView, *, this: bool) -> NodeRow:
    state = _state(node.state)
    return NodeRow(
        address=node.address,
        this=this,
        role=ROLES.get(node.role, node.role),
        state=STATES[state],
        state_class=f"state-{state}",
        revision="none yet" if node.revision is None else str(node.revision),
        sync="owns the configuration" if node.sync == "owner" else node.sync,
        engine=node.engine,
        engine_error=node.engine_error,
    )


def _state(state: str) -> str:
    return state if state in STATES else "unknown"


def primary_url(pair: Pair, path: str = "/") -> str | None:
    """Where the Primary's WebUI answers ``path``, seen from the Secondary; None elsewhere."""
    if pair.role != "secondary":
        return None
    address = ipaddress.ip_address(pair.peer_address)
    host = f"[{address}]" if address.version == 6 else str(address)
    return f"https://{host}:{pair.peer_port}{path}"
