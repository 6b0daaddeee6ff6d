"""Every default Balancer uses, in one place.

These are the values an operator gets by "leaving all other settings at their default value"
(the guide's words). The model takes its field defaults from here, and the README's table of
defaults is tested against ``DEFAULTS`` so the two cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass

HOUR = 3600.0

PROTOCOL = "tcp"
BALANCING = "round_robin"
# RDP sessions idle for hours; Loadbalancer.org's Layer 7 default is 12 hours both ways.
CLIENT_TIMEOUT = 12 * HOUR
SERVER_TIMEOUT = 12 * HOUR
CONNECT_TIMEOUT = 4.0
RETRIES = 3

PERSISTENCE_MODE = "source_ip"
PERSISTENCE_TIMEOUT = 30 * 60.0
PERSISTENCE_TABLE_SIZE = 1_000_000

CHECK_TYPE = "connect"
CHECK_METHOD = "GET"
CHECK_INTERVAL = 4.0
CHECK_TIMEOUT = 4.0
CHECK_RISE = 2
CHECK_FALL = 3

WEIGHT = 100
WEIGHT_MAX = 256
REAL_SERVER_STATE = "online"
MAX_CONNECTIONS = 0

ENGINE = "builtin"
# The built-in engine's processes relaying, sharing its listening sockets; one per core at most.
WORKERS = 1
WORKERS_MAX = 64
HTTPS_PORT = 9443
HTTP_PORT: int | None = None
# An HA pair's VRRP advert interval (s): a dead node is replaced within about 3.5 adverts.
ADVERT_INTERVAL = 0.2
# Off: a node that comes back does not take the floating IPs back until an operator says so.
PREEMPT = False
# An HA pair's persistence replication between the nodes' engines (the guide's TCP 7778).
REPLICATION_PORT = 7778
DATA_DIR = "/var/lib/balancer"
# None: every address of the node (IPv6 and IPv4).
LISTEN_ADDRESS: str | None = None
# The networks whose Prometheus may read GET /metrics without an API key: none, a key is needed.
METRICS_ALLOW: tuple[()] = ()
# The networks that may reach the WebUI and the API: none listed, every network may.
MANAGEMENT_ALLOW: tuple[()] = ()

# The guide's WebUI user; its password is set by `balancer init` or made at first start.
USER = "loadbalancer"
# A WebUI session unused this long must sign in again; live refreshes do not count as use.
SESSION_IDLE_TIMEOUT = 30 * 60.0
# A working day: sign in again each morning, however busy the session was.
SESSION_MAX_LIFETIME = 12 * 3600.0
# Sign-in throttle: after this many failures from one address, or for one user name, each
# further attempt must wait, twice as long after each new failure, up to the maximum; failures
# are forgotten after a quiet while.
SIGN_IN_FREE_FAILURES = 3
SIGN_IN_DELAY = 1.0
SIGN_IN_DELAY_MAX = 30.0
SIGN_IN_FORGET = 15 * 60.0


@dataclass(frozen=True, slots=True)
class Default:
    setting: str
    value: object
    meaning: str


DEFAULTS: tuple[Default, ...] = (
    Default("virtual service: protocol", PROTOCOL, "Layer 7 TCP mode, bytes relayed unchanged"),
    Default("virtual service: balancing", BALANCING, "weighted; or least_connections"),
    Default("virtual service: client_timeout", CLIENT_TIMEOUT, "seconds a client may be silent"),
    Default("virtual service: server_timeout", SERVER_TIMEOUT, "seconds a server may be silent"),
    Default("virtual service: connect_timeout", CONNECT_TIMEOUT, "seconds to reach a server"),
    Default("virtual service: retries", RETRIES, "servers tried for one client (redispatch)"),
    Default("virtual service: fallback", None, "none: refused at once when all are down"),
    Default("persistence: mode", PERSISTENCE_MODE, "a client's source IP keeps its server"),
    Default("persistence: timeout", PERSISTENCE_TIMEOUT, "seconds remembered after last use"),
    Default("persistence: table_size", PERSISTENCE_TABLE_SIZE, "clients remembered per service"),
    Default("health check: type", CHECK_TYPE, "TCP connect to the check port"),
    Default("health check: method", CHECK_METHOD, "for negotiate HTTP/HTTPS checks"),
    Default("health check: port", None, "none: the real server's own port"),
    Default("health check: interval", CHECK_INTERVAL, "seconds between checks"),
    Default("health check: timeout", CHECK_TIMEOUT, "seconds one check may take"),
    Default("health check: rise", CHECK_RISE, "passes in a row to come back"),
    Default("health check: fall", CHECK_FALL, "failures in a row to be taken out"),
    Default("real server: port", None, "none: the port the client connected to"),
    Default("real server: weight", WEIGHT, f"0..{WEIGHT_MAX}; 0 takes no new clients"),
    Default("real server: state", REAL_SERVER_STATE, "online, drain or halt"),
    Default("real server: max_connections", MAX_CONNECTIONS, "0 is no limit"),
    Default("node: engine", ENGINE, "the data plane"),
    Default("node: workers", WORKERS, f"built-in engine processes, 1..{WORKERS_MAX}"),
    Default("node: https_port", HTTPS_PORT, "WebUI and API over HTTPS"),
    Default("node: http_port", HTTP_PORT, "plain HTTP WebUI, off (the guide's 9080)"),
    Default("node: listen_address", LISTEN_ADDRESS, "none: WebUI and API on every address"),
    Default("node: session_idle_timeout", SESSION_IDLE_TIMEOUT, "seconds unused until signed out"),
    Default(
        "node: session_max_lifetime", SESSION_MAX_LIFETIME, "seconds from sign-in until signed out"
    ),
    Default("node: metrics_allow", METRICS_ALLOW, "none: GET /metrics needs an API key"),
    Default("node: management_allow", MANAGEMENT_ALLOW, "none: WebUI and API from every network"),
    Default(
        "pair: advert_interval", ADVERT_INTERVAL, "seconds between VRRP adverts (1.0: conservative)"
    ),
    Default("pair: preempt", PREEMPT, "a returning node does not take the VIPs back"),
    Default(
        "pair: replication_port", REPLICATION_PORT, "persistence tables between the engines, TLS"
    ),
)


def markdown_table() -> str:
    """The README's table of defaults; a test keeps the README equal to this."""
    rows = ["| setting | default | meaning |", "|---|---|---|"]
    for entry in DEFAULTS:
        value = "none" if entry.value in (None, ()) else f"`{entry.value}`"
        rows.append(f"| {entry.setting} | {value} | {entry.meaning} |")
    return "\n".join(rows)
