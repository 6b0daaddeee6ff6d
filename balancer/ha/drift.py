"""Drift of node settings: where the two nodes of a pair differ in what the guide's 14.1.1 says
an operator sets by hand on both (hostname and DNS, routing, date and time, the appliance's own
settings, software updates).

Each node gathers its own ``Facts`` (balancer.pair.facts) and answers them to the peer with its
status; the link measures the clock ``Offset`` between the nodes. ``compare`` is pure: one
``Row`` per setting Balancer can see, each saying both nodes' values, whether they differ and
why that matters. The rules:

- hostnames must differ: two nodes of one name are one node in logs, alerts and certificates;
- DNS resolvers equal, in order (the first is asked first);
- both clocks synchronised, and their offset (less its uncertainty) at most ``CLOCK_LIMIT``;
- the MTU of the interface carrying the pair's addresses equal;
- each real server reached by the same kind of route: through the same gateway, or on-link on
  both. The interface's name may differ (hardware names its own), so it is shown, not compared;
- the engine, its workers (the built-in engine's; HAProxy has none to set) and the Balancer
  version equal.

A fact a node could not read is ``unknown`` there, with why; a row with an unknown side is
marked as differing, since Balancer cannot say the nodes agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Seconds of clock offset between the nodes beyond which logs, audits and certificates'
# validity disagree between them.
CLOCK_LIMIT = 1.0


@dataclass(frozen=True)
class Route:
    """How a node reaches one real server (``ip route get``): through ``gateway``, or on-link
    (None), out of ``device``; ``unknown`` says why it could not be found."""

    server: str
    gateway: str | None = None
    device: str | None = None
    unknown: str | None = None


@dataclass(frozen=True)
class Facts:
    """One node's settings that the pair does not replicate, as that node sees them."""

    hostname: str  # the node setting (the WebUI's certificate, backups, logs)
    system_hostname: str  # the operating system's
    resolvers: tuple[str, ...] | None  # /etc/resolv.conf's nameservers, in order
    synchronised: bool | None  # the kernel's view of its clock (adjtimex)
    max_error: float | None  # seconds: the kernel's bound on its clock's error
    wall: float  # the node's clock (Unix time) when it gathered these
    mtu: int | None  # of the interface carrying the pair's local address
    routes: tuple[Route, ...]  # to each real server of the running configuration
    engine: str
    workers: int
    version: str
    # Why a fact above is None, by its name: "cannot read /etc/resolv.conf: ...".
    unknown: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Offset:
    """The peer's clock less this node's, in seconds, measured by the link: the peer's wall
    time against the midpoint of the request, uncertain by half its round trip."""

    seconds: float
    uncertainty: float


@dataclass(frozen=True)
class Row:
    """One setting compared: both nodes' values as shown, and why it matters."""

    setting: str
    this: str
    peer: str
    why: str
    differs: bool


@dataclass(frozen=True)
class Comparison:
    """The nodes' settings compared; ``unseen`` says why they could not be (the peer not
    heard, or a Balancer too old to report them), with no rows then."""

    rows: tuple[Row, ...] = ()
    unseen: str | None = None

    @property
    def differences(self) -> tuple[Row, ...]:
        return tuple(row for row in self.rows if row.differs)


def compare(this: Facts, peer: Facts | None, offset: Offset | None) -> Comparison:
    """Every setting Balancer can see on both nodes, compared by the module's rules."""
    if peer is None:
        return Comparison(unseen="the peer has not reported its node settings")
    rows = [
        *_hostnames(this, peer),
        _equal(
            "DNS resolvers",
            _shown(this, "resolvers", _resolvers(this.resolvers)),
            _shown(peer, "resolvers", _resolvers(peer.resolvers)),
            "names resolve alike on both nodes",
        ),
        _clock(this, peer),
        *_offset(offset),
        _equal(
            "MTU",
            _shown(this, "mtu", str(this.mtu)),
            _shown(peer, "mtu", str(peer.mtu)),
            "a smaller MTU on one node drops or fragments large packets after a failover",
        ),
        *_routes(this, peer),
        _equal("engine", this.engine, peer.engine, "the data plane behaves alike on both"),
        *_workers(this, peer),
        _equal(
            "Balancer version",
            this.version,
            peer.version,
            "the nodes sync and replicate what both versions understand",
        ),
    ]
    return Comparison(tuple(rows))


def _hostnames(this: Facts, peer: Facts) -> list[Row]:
    why = "must differ: logs, alerts and certificates tell the nodes apart by it"
    rows = [_apart("hostname", this.hostname, peer.hostname, why)]
    # The system's own, shown apart only on a node where it is not the setting's.
    if any(n.system_hostname.lower() != n.hostname.lower() for n in (this, peer)):
        rows.append(_apart("system hostname", this.system_hostname, peer.system_hostname, why))
    return rows


def _apart(setting: str, this: str, peer: str, why: str) -> Row:
    return Row(setting, this, peer, why, differs=this.lower() == peer.lower())


def _equal(setting: str, this: str, peer: str, why: str) -> Row:
    unknown = this.startswith("unknown") or peer.startswith("unknown")
    return Row(setting, this, peer, why, differs=unknown or this != peer)


def _shown(facts: Facts, name: str, value: str) -> str:
    """``value``, or why the fact is not known on that node."""
    why = facts.unknown.get(name)
    return f"unknown: {why}" if why is not None else value


def _resolvers(resolvers: tuple[str, ...] | None) -> str:
    return ", ".join(resolvers) if resolvers else "none"


def _clock(this: Facts, peer: Facts) -> Row:
    def said(facts: Facts) -> str:
        if facts.synchronised is None:
            return _shown(facts, "synchronised", "unknown")
        if not facts.synchronised:
            return "not synchronised"
        if facts.max_error is None:
            return "synchronised"
        return f"synchronised (max error {facts.max_error * 1000:.0f} ms)"

    return Row(
        "time synchronisation",
        said(this),
        said(peer),
        "an unsynchronised clock drifts: logs, audits and certificates' validity disagree",
        differs=not (this.synchronised and peer.synchronised),
    )


def _offset(offset: Offset | None) -> list[Row]:
    if offset is None:
        return []
    ahead = "ahead" if offset.seconds >= 0 else "behind"
    return [
        Row(
            "clock offset",
            "this node's clock",
            f"{abs(offset.seconds):.3f} s {ahead} (± {offset.uncertainty:.3f} s)",
            f"more than {CLOCK_LIMIT:g} s apart, the nodes' logs and audits disagree",
            differs=abs(offset.seconds) - offset.uncertainty > CLOCK_LIMIT,
        )
    ]


def _routes(this: Facts, peer: Facts) -> list[Row]:
    """A row per real server both nodes route to, in this node's order."""
    theirs = {route.server: route for route in peer.routes}
    rows = []
    for mine in this.routes:
        other = theirs.get(mine.server)
        if other is None:  # not in the peer's running configuration (yet)
            continue
        unknown = mine.unknown is not None or other.unknown is not None
        rows.append(
            Row(
                f"route to {mine.server}",
                _route(mine),
                _route(other),
                "after a failover the real server is reached the same way",
                differs=unknown or mine.gateway != other.gateway,
            )
        )
    return rows


def _route(route: Route) -> str:
    if route.unknown is not None:
        return f"unknown: {route.unknown}"
    how = "on-link" if route.gateway is None else f"via {route.gateway}"
    return how if route.device is None else f"{how} ({route.device})"


def _workers(this: Facts, peer: Facts) -> list[Row]:
    if this.engine != "builtin" or peer.engine != "builtin":
        return []  # HAProxy's own threads are not a setting; the engine row covers a mix
    why = "the same capacity after a failover"
    return [_equal("workers", str(this.workers), str(peer.workers), why)]
