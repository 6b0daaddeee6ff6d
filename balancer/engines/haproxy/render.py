"""The configuration model as one haproxy.cfg. Pure: the same model always gives the same text.

Names are fixed, and the engine's Runtime API commands rely on them: one ``listen`` section per
virtual service, named by its label (which is also the name of its stick table); one ``server``
per real server, named by its label; the fallback is ``server fallback <ip>:<port> backup``.

How the model's meanings become HAProxy's:

- drain is ``weight 0``: HAProxy then sends no new clients but keeps persistent ones, exactly the
  model's drain (HAProxy 2.6 has no configuration keyword for its own drain state);
- halt is ``disabled`` (maintenance: no traffic at all, not even persistent clients);
- ``retries`` counts servers tried, HAProxy's ``retries`` counts attempts after the first, and
  ``option redispatch 1`` makes every retry go to another server;
- persistence renews an entry when a connection ends as well as when one starts: the stick table
  also tracks ``conn_cur``, and HAProxy keeps a tracked entry alive while a connection uses it and
  touches it again when the connection ends;
- the stick tables belong to a ``peers`` section, so that a reload hands every entry from the
  old worker to the new one. Standalone, it has only the local peer, on a Unix socket. In an HA
  pair it has both nodes, each named by its address, over mutual TLS with the pair's own
  authority: the local peer listens on this node's address (where the old worker also hands its
  tables to the new one) and the other node's is reached on its address;
- a replicated entry names its server by id as well as by label, so every server has an ``id``
  that depends on its label alone (see ``server_ids``): the same on both nodes, and kept while
  other servers come and go.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from ipaddress import IPv6Address, ip_address

from balancer.engines import Replication
from balancer.engines.haproxy import limits
from balancer.engines.haproxy.limits import Files, Limit
from balancer.engines.haproxy.paths import Paths
from balancer.model import (
    Balancing,
    CheckType,
    Config,
    HealthCheck,
    PersistenceMode,
    RealServer,
    RealServerState,
    VirtualService,
)
from balancer.model.types import IPAddress, each_port
from balancer.validate import Problem

REVISION_VARIABLE = "BALANCER_REVISION"
FALLBACK = "fallback"
PEERS = "balancer"
LOCAL_PEER = "local"
# Real servers' ids are hashes of their labels in 1 .. ID_SPACE - 1; the fallback's is ID_SPACE.
ID_SPACE = 1_000_000
FALLBACK_ID = ID_SPACE
SNIPPET = 160  # bytes of a failing health page quoted in its reason; shortened later
BODY = "body"  # the check's variable holding them
USER_AGENT = "Balancer-health-check"
# As the built-in engine: keepalive finds a vanished peer of an idle RDP session in ~7 minutes.
KEEPALIVE = {"idle": "300s", "intvl": "30s", "cnt": "4"}

BALANCE = {Balancing.ROUND_ROBIN: "roundrobin", Balancing.LEAST_CONNECTIONS: "leastconn"}


def render(
    config: Config,
    paths: Paths,
    limit: Limit,
    revision: int | None = None,
    listen: Callable[[VirtualService], str] | None = None,
    replication: Replication | None = None,
) -> str:
    """haproxy.cfg for ``config``, sized to ``limit``; ``revision`` is written into it for the
    worker to report. ``listen`` gives a service's section (``section`` or a ``Sections``).
    With ``replication``, the stick tables are shared with the pair's other node."""
    counted = files(config, limit, replication is not None)
    connections = max(limits.max_connections(counted, limit), limits.MINIMUM_CONNECTIONS)
    sections = [
        "\n".join(lines)
        for lines in (
            _global(config, paths, revision, replication) + _sized(counted, limit, connections),
            _defaults(connections),
            _peers(paths, replication),
        )
    ]
    sections += [(listen or section)(vs) for vs in config.virtual_services]
    head = f"# Balancer revision {'none' if revision is None else revision}; generated, not edited"
    return head + "\n" + "\n\n".join(sections) + "\n"


def section(vs: VirtualService) -> str:
    """The ``listen`` section of ``vs``."""
    return "\n".join(_listen(vs))


class Sections:
    """``make`` of a service (its ``section`` by default), remembered while the service is the
    same object: an edit keeps every service it does not touch, so a commit renders what it
    changed."""

    def __init__(self, make: Callable[[VirtualService], str] | None = None) -> None:
        self._make = make or section
        self._kept: dict[str, tuple[VirtualService, str]] = {}

    def __call__(self, vs: VirtualService) -> str:
        kept = self._kept.get(vs.label)
        if kept is not None and kept[0] is vs:
            return kept[1]
        text = self._make(vs)
        self._kept[vs.label] = (vs, text)
        return text

    def only(self, config: Config) -> None:
        """Forget the services ``config`` no longer has."""
        labels = {vs.label for vs in config.virtual_services}
        self._kept = {label: kept for label, kept in self._kept.items() if label in labels}


def _global(
    config: Config, paths: Paths, revision: int | None, replication: Replication | None
) -> list[str]:
    local = LOCAL_PEER if replication is None else peer_name(replication.local)
    lines = [
        "global",
        f"    stats socket {paths.stats_socket} mode 600 level admin expose-fd listeners",
        f"    server-state-file {paths.state_file}",
        # The workers' standard output is a file the engine names; see Paths.log.
        "    log stdout format iso local0",
        f"    localpeer {local}",
        # Health pages of PSM servers are self-signed: checks never verify a certificate.
        "    ssl-server-verify none",
    ]
    if revision is not None:
        lines.append(f"    setenv {REVISION_VARIABLE} {revision}")
    if any(vs.health_check.type is CheckType.EXTERNAL for vs in config.virtual_services):
        lines += ["    external-check", "    insecure-fork-wanted"]
    return lines


def files(config: Config, limit: Limit, replicating: bool = False) -> Files:
    """What HAProxy counts for ``config`` before any connection; see ``limits``."""
    checked = [
        (vs, rs)
        for vs in config.virtual_services
        if vs.health_check.type is not CheckType.NONE
        for rs in vs.real_servers
    ]
    return Files(
        listeners=sum(len(each_port(vs.ports)) for vs in config.virtual_services),
        checks=len(checked),
        check_ports=sum(1 for vs, rs in checked if check_port(vs, rs) is not None),
        own=limits.own(limit, replicating),
    )


def _sized(counted: Files, limit: Limit, connections: int) -> list[str]:
    """The connection limit, and the open-files limit HAProxy stays within (it never tries to
    raise its own above it)."""
    return [
        f"    # Sized to this node's open-files limit, {limit.open_files}: "
        f"{counted.listeners} listening ports, {counted.checks + counted.check_ports} for "
        f"health checks and {counted.own} for HAProxy itself leave room for {connections} "
        f"connections of {limits.PER_CONNECTION} files each",
        f"    fd-hard-limit {limit.open_files}",
        f"    ulimit-n {limit.open_files}",
        f"    maxconn {connections}",
    ]


def _defaults(connections: int) -> list[str]:
    return [
        "defaults",
        "    mode tcp",
        # Each service may take every connection the node has room for.
        f"    maxconn {connections}",
        "    log global",
        "    option tcplog",
        "    option dontlognull",
        # Counters of long RDP sessions move while they run, not only when they end.
        "    option contstats",
        "    option tcpka",
        *(
            f"    {side}tcpka-{key} {value}"
            for side in ("cli", "srv")
            for key, value in KEEPALIVE.items()
        ),
        "    load-server-state-from-file global",
    ]


def _peers(paths: Paths, replication: Replication | None) -> list[str]:
    if replication is None:
        return [f"peers {PEERS}", f"    peer {LOCAL_PEER} unix@{paths.peers_socket}"]
    # Each side shows this node's pair certificate and takes only one of the pair's authority:
    # the peer protocol's handshake carries names alone, which anyone could send.
    tls = f"ssl crt {paths.peer_bundle} ca-file {paths.peer_authority} verify required"
    local = _address(ip_address(replication.local), str(replication.port))
    peer = _address(ip_address(replication.peer), str(replication.port))
    return [
        f"peers {PEERS}",
        f"    bind {local} {tls}",
        f"    default-server {tls}",
        # The local peer has no address of its own: it is the bind line's.
        f"    server {peer_name(replication.local)}",
        f"    server {peer_name(replication.peer)} {peer}",
    ]


def clashes(config: Config) -> list[Problem]:
    """Real servers named like the fallback's ``server`` line, in services that have one.
    HAProxy 2.6 stops refusing two servers of one name once they have ids, and the Runtime API
    finds servers by name."""
    return [
        Problem(
            f"virtual_services[{vs.label}].real_servers[{FALLBACK}]",
            f"the label {FALLBACK!r} is the fallback server's in HAProxy; choose another",
        )
        for vs in config.virtual_services
        if vs.fallback is not None and vs.real_server(FALLBACK) is not None
    ]


def peer_name(address: str) -> str:
    """A node's name among the peers: its address, which both nodes know it by."""
    return str(ip_address(address))


def server_ids(vs: VirtualService) -> dict[str, int]:
    """Each real server's ``id`` by label: a hash of the label, so that it is the same on both
    nodes and stays while other servers are added or removed. Labels that hash alike take the
    next free id in the order of their labels; only a server whose label collides can move."""
    ids: dict[str, int] = {}
    taken: set[int] = set()
    for label in sorted(rs.label for rs in vs.real_servers):
        digest = hashlib.sha256(label.encode()).digest()
        id_ = int.from_bytes(digest[:8], "big") % (ID_SPACE - 1) + 1
        while id_ in taken:
            id_ = id_ % (ID_SPACE - 1) + 1
        taken.add(id_)
        ids[label] = id_
    return ids


def _listen(vs: VirtualService) -> list[str]:
    lines = [f"listen {vs.label}"]
    # v6only, as the built-in engine: "::" is IPv6 alone, never IPv4 as well. transparent:
    # bound even while this node does not hold the VIP (IP_FREEBIND where IP_TRANSPARENT is
    # refused), so an HA takeover only moves the address; the built-in engine does the same.
    only = " v6only" if isinstance(vs.ip, IPv6Address) else ""
    lines += [
        f"    bind {_address(vs.ip, _range(lo, hi))} transparent{only}" for lo, hi in vs.ports
    ]
    lines += [
        f"    balance {BALANCE[vs.balancing]}",
        f"    timeout client {duration(vs.client_timeout)}",
        f"    timeout server {duration(vs.server_timeout)}",
        f"    timeout connect {duration(vs.connect_timeout)}",
        f"    retries {vs.retries - 1}",
        "    option redispatch 1",
    ]
    persistence = vs.persistence
    if persistence.mode is PersistenceMode.SOURCE_IP:
        kind = "ipv6" if isinstance(vs.ip, IPv6Address) else "ip"
        # One entry more than table_size: for a new client, track-sc0 has stored its entry
        # when "stick on" (its store-request half) allocates one of its own, counted against
        # the size, which it merges into the first and frees only once the server is chosen
        # (stksess_new in process_sticking_rules, HAProxy 2.6). Sized table_size, a full
        # table evicts one client more for it and keeps table_size - 1 (table_size 1: none).
        lines += [
            f"    stick-table type {kind} size {persistence.table_size + 1} "
            f"expire {duration(persistence.timeout)} store conn_cur peers {PEERS}",
            "    tcp-request content track-sc0 src",
            "    stick on src",
        ]
    lines += check_rules(vs)
    ids = server_ids(vs)
    lines += [
        f"    server {rs.label} {server_arguments(vs, rs)} id {ids[rs.label]}"
        for rs in vs.real_servers
    ]
    if vs.fallback is not None:
        fallback = _address(vs.fallback.ip, str(vs.fallback.port))
        lines.append(f"    server {FALLBACK} {fallback} backup id {FALLBACK_ID}")
    return lines


def server_arguments(vs: VirtualService, rs: RealServer) -> str:
    """Everything after ``server <label>``: the address, then state and health check."""
    port = None if rs.port is None else str(rs.port)
    words = [_address(rs.ip, port), "weight", str(runtime_weight(rs))]
    if rs.state is RealServerState.HALT:
        words.append("disabled")
    if rs.max_connections:
        words += ["maxconn", str(rs.max_connections)]
    check = vs.health_check
    if check.type is not CheckType.NONE:
        words += ["check", "inter", duration(check.interval)]
        words += ["rise", str(check.rise), "fall", str(check.fall)]
        port_of_check = check_port(vs, rs)
        if port_of_check is not None:
            words += ["port", str(port_of_check)]
        if check.type is CheckType.HTTPS and not _also(check):
            words.append("check-ssl")
    return " ".join(words)


def runtime_weight(rs: RealServer) -> int:
    """The weight HAProxy runs: 0 for a drained server, which keeps its persistent clients."""
    return 0 if rs.state is RealServerState.DRAIN else rs.weight


def check_port(vs: VirtualService, rs: RealServer) -> int | None:
    """The server line's ``port``: where the check connects when its rules name no port.

    With ``also_check_service_port`` the rules name the check port themselves and this is the
    service port, which can differ between servers; otherwise it is the check port. None
    when that is the server's own port, which HAProxy checks without being told."""
    if vs.health_check.port is not None and not _also(vs.health_check):
        return vs.check_port(rs)
    return None if rs.port is not None else vs.service_port(rs)


def check_rules(vs: VirtualService) -> list[str]:
    """The section's health check rules: what every server's check sends and expects."""
    check = vs.health_check
    if check.type is CheckType.NONE:
        return []
    lines = [f"    timeout check {duration(check.timeout)}"]
    also = _also(check)
    if check.type is CheckType.CONNECT:
        if also:
            # tcp-check names the failing step in its reason: step 2 is the service port.
            lines += [
                "    option tcp-check",
                f"    tcp-check connect port {check.port}",
                "    tcp-check connect",
            ]
        return lines
    if check.type is CheckType.EXTERNAL:
        assert check.script is not None  # the model requires a script for this type
        lines.append("    option external-check")
        lines.append(f"    external-check command {quote(check.script)}")
        return lines
    lines.append("    option httpchk")
    if also:
        ssl = " ssl" if check.type is CheckType.HTTPS else ""
        lines.append(f"    http-check connect port {check.port}{ssl}")
    lines += _http_rules(check)
    if also:
        lines.append("    http-check connect")
    return lines


def _also(check: HealthCheck) -> bool:
    """Whether the check connects to the service port as well: only when its own port differs
    (a check on the service port itself has connected to it already)."""
    return check.also_check_service_port and check.port is not None


def _http_rules(check: HealthCheck) -> list[str]:
    assert check.path is not None  # the model requires a path for HTTP and HTTPS
    lines = [
        f"    http-check send meth {check.method.value} uri {quote(check.path)} ver HTTP/1.0 "
        f"hdr User-Agent {USER_AGENT}",
        "    http-check expect status 200-299",
    ]
    if check.expect is not None:
        # on-error is a log-format string: a literal % is written %%.
        literal = expect_prefix(check.expect).replace("%", "%%")
        # The body is quoted through a variable: res.body in a log-format would make HAProxy
        # warn that a TCP service cannot log HTTP. The first rule, which no body can fail
        # but an empty one, waits for the whole body before the variable is set.
        lines += [
            f"    http-check expect ! rstring '(?!)' on-error {quote(literal)}",
            f"    http-check set-var(check.{BODY}) res.body,bytes(0,{SNIPPET})",
            f"    http-check expect string {quote(check.expect)} "
            f"on-error {quote(f'{literal}%[var(check.{BODY})]')}",
        ]
    return lines


def expect_prefix(expect: str) -> str:
    """How a failed expect's reason begins; the body HAProxy read follows it."""
    return f"expected {expect}, got "


def quote(word: str) -> str:
    """One configuration word, whatever it holds: HAProxy's single quotes take everything
    literally (no variables, no escapes), and a single quote itself is spliced in double ones."""
    return "'" + word.replace("'", "'\"'\"'") + "'"


def duration(seconds: float) -> str:
    """A time as HAProxy writes it, in the largest unit that keeps it exact."""
    ms = round(seconds * 1000)
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def _range(lo: int, hi: int) -> str:
    return str(lo) if lo == hi else f"{lo}-{hi}"


def _address(ip: IPAddress, port: str | None) -> str:
    host = f"[{ip}]" if isinstance(ip, IPv6Address) else str(ip)
    return host if port is None else f"{host}:{port}"
