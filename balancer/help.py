"""What the "?" beside each Cluster Configuration field says: the guide's name for the field,
what it does, and its default, in one place for every page that shows the field.

Defaults are read from ``balancer.defaults`` and, where the model describes a field itself,
its description is the help, so the help cannot say something the appliance does not do.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel

from balancer import defaults
from balancer.model import HealthCheck, RealServer
from balancer.presets import psm


@dataclass(frozen=True, slots=True)
class Help:
    label: str  # the guide's name for the field
    text: str
    default: str = ""  # said after the text; empty where there is none to say


_DEFAULTS = {entry.setting: entry for entry in defaults.DEFAULTS}


def _default(setting: str) -> str:
    """A default as the README's table says it: the value, or what having none means."""
    entry = _DEFAULTS[setting]
    if entry.value is None:
        return entry.meaning
    value = entry.value
    return str(value).removesuffix(".0") if isinstance(value, float) else str(value)


def _described(model: type[BaseModel], field: str) -> str:
    description = model.model_fields[field].description or ""
    return description[:1].upper() + description[1:] + "."


# The choices of a select, in the guide's words, by the value the form sends.
BALANCING = (
    ("round_robin", "Weighted Round Robin"),
    ("least_connections", "Weighted Least Connections"),
)
PERSISTENCE = (("source_ip", "Source IP"), ("none", "None"))
# The guide's "Health Checks" names the check and, for a negotiate check, its method in one
# choice ("Negotiate HTTPS (GET)"); the form sends them as "type:method".
HEALTH_CHECKS = (
    ("connect", "Connect to Port"),
    ("https:GET", "Negotiate HTTPS (GET)"),
    ("https:HEAD", "Negotiate HTTPS (HEAD)"),
    ("http:GET", "Negotiate HTTP (GET)"),
    ("http:HEAD", "Negotiate HTTP (HEAD)"),
    ("external", "External Script"),
    ("none", "No Checks, Always On"),
)
PROTOCOLS = (("tcp", "TCP Mode"),)

VIRTUAL_SERVICE = {
    "label": Help(
        "Label",
        "A name for the virtual service, e.g. CyberArk-PSM: letters, digits, '.', '_' and '-', "
        "up to 64 characters, starting with a letter or digit. System Overview, the logs and "
        "the API call the service by it.",
    ),
    "ip": Help(
        "IP Address",
        "The address clients connect to (the VIP), IPv4 or IPv6, e.g. 192.168.94.100. Use the "
        "address your users' DNS name points to.",
    ),
    "ports": Help(
        "Ports",
        "The port clients connect to, e.g. 3389; several as 3389,3390 or a range as 8000-8010. "
        "An address and port can belong to one virtual service only.",
    ),
    "protocol": Help(
        "Layer 7 Protocol",
        "TCP Mode: each connection is relayed byte for byte, so TLS passes through to the real "
        "servers untouched, as CyberArk asks. The real servers see the appliance's address.",
        _default("virtual service: protocol"),
    ),
    "balancing": Help(
        "Balance Mode",
        "How new clients are shared among the real servers: Weighted Round Robin takes them in "
        "turn by weight; Weighted Least Connections gives each new client to the server with "
        "the fewest connections for its weight (CyberArk's recommendation for PSM).",
        _default("virtual service: balancing"),
    ),
    "persistence.mode": Help(
        "Persistence Mode",
        "Source IP: a client comes back to the real server it used before, as long as it is "
        "remembered, so a PSM user who reconnects finds their session. The guide sets Source "
        "IP for both PSM services. None: every connection is balanced afresh.",
        _default("persistence: mode"),
    ),
    "persistence.timeout": Help(
        "Persistence Timeout",
        "Seconds a client is remembered after its last connection ends.",
        _default("persistence: timeout"),
    ),
    "persistence.table_size": Help(
        "Persistence Table Size",
        "How many clients are remembered at most for this virtual service.",
        _default("persistence: table_size"),
    ),
    "health_check.type": Help(
        "Health Checks",
        "How the appliance decides a real server may have clients. Negotiate HTTPS (GET) asks "
        "for a page and looks for the expected text in the answer: for PSM, /psm/api/health "
        "answering PASS, as the guide sets. Connect to Port only opens a TCP connection; an "
        "External Script decides by its exit status; No Checks takes every server as healthy.",
        dict(HEALTH_CHECKS)[defaults.CHECK_TYPE],
    ),
    "health_check.port": Help(
        "Check Port",
        "The port the check connects to; empty checks each real server on its own port. The "
        "guide's RDP service (3389) is checked on 443, where PSM's health page is, because "
        "RDP does not answer HTTPS.",
        _default("health check: port"),
    ),
    "health_check.path": Help(
        "Request to Send",
        "For a negotiate check: the path asked for, e.g. /psm/api/health. It starts with / and "
        "has no spaces (percent-encode anything else).",
    ),
    "health_check.expect": Help(
        "Response Expected",
        "For a negotiate check: text the answer's body must contain, e.g. PASS; the status "
        "must also be 2xx. Empty: any 2xx answer will do. Certificates are not verified, as "
        "PSM health pages are usually self-signed.",
    ),
    "health_check.script": Help(
        "Check Script",
        _described(HealthCheck, "script")
        + " It is run as: script <vip> <vip-port> <server> <server-port>; exit status 0 means "
        "healthy.",
    ),
    "health_check.also_check_service_port": Help(
        "Also Check Service Port",
        _described(HealthCheck, "also_check_service_port")
        + " A PSM server whose IIS says PASS while its RDP service is stuck then gets no users.",
        "off",
    ),
    "health_check.interval": Help(
        "Check Interval",
        "Seconds between two checks of one real server.",
        _default("health check: interval"),
    ),
    "health_check.timeout": Help(
        "Check Timeout",
        "Seconds one check may take before it counts as failed.",
        _default("health check: timeout"),
    ),
    "health_check.rise": Help(
        "Check Rise",
        "Passes in a row a failed real server needs to come back.",
        _default("health check: rise"),
    ),
    "health_check.fall": Help(
        "Check Fall",
        "Failures in a row that take a healthy real server out. A server starts healthy, but "
        "its first failed check takes it out.",
        _default("health check: fall"),
    ),
    "fallback.ip": Help(
        "Fallback Server IP Address",
        "Where new clients go when no real server can take them, e.g. a page saying PSM is "
        "down. Empty: such clients are refused at once rather than left waiting.",
        _default("virtual service: fallback"),
    ),
    "fallback.port": Help(
        "Fallback Server Port",
        "The fallback server's port; needed when it has an address.",
    ),
    "client_timeout": Help(
        "Client Timeout",
        "Seconds a client may stay silent before its connection is closed. RDP sessions "
        "idle for hours; keep it long.",
        _default("virtual service: client_timeout"),
    ),
    "server_timeout": Help(
        "Real Server Timeout",
        "Seconds a real server may stay silent before the connection is closed.",
        _default("virtual service: server_timeout"),
    ),
    "connect_timeout": Help(
        "Connect Timeout",
        "Seconds one attempt to reach a real server may take.",
        _default("virtual service: connect_timeout"),
    ),
    "retries": Help(
        "Retries",
        "How many real servers are tried for one client when one refuses the connection.",
        _default("virtual service: retries"),
    ),
}

REAL_SERVER = {
    "label": Help(
        "Label",
        "A name for the real server, e.g. PSM1: letters, digits, '.', '_' and '-', up to 64 "
        "characters, unique within its virtual service.",
    ),
    "ip": Help(
        "Real Server IP Address",
        "The real server's address, IPv4 or IPv6, e.g. 192.168.94.105. It can be on any "
        "network the appliance reaches.",
    ),
    "port": Help(
        "Real Server Port",
        "The port the real server listens on, e.g. 3389; a port other than the virtual "
        "service's translates it (VIP 443 to server 8443). "
        + _described(RealServer, "port").replace("None:", "Empty:"),
        _default("real server: port"),
    ),
    "weight": Help(
        "Weight",
        "The server's share of new clients against the others, 0 to 256: a server of weight "
        "200 gets twice the clients of one of 100. 0 takes no new clients, like drain.",
        _default("real server: weight"),
    ),
    "max_connections": Help(
        "Max Connections",
        "At most this many connections at once; 0 is no limit. Set it to the PSM server's own "
        "session limit (MaxConcurrentTSSessions).",
        _default("real server: max_connections"),
    ),
}

PSM = {
    "rdp_vip": Help(
        f"VIP 1 {psm.RDP_LABEL}: IP Address",
        "The address RDP clients connect to (the guide's VIP 1, native PSM sessions).",
    ),
    "web_vip": Help(
        f"VIP 2 {psm.WEB_LABEL}: IP Address",
        "The address browsers connect to for the PSM HTML5 gateway (the guide's VIP 2).",
    ),
    "rdp_port": Help(
        "RDP Port",
        "The port of VIP 1 and of the PSM servers' RDP service.",
        str(psm.RDP_PORT),
    ),
    "web_port": Help(
        "HTML5 Gateway Port",
        "The port of VIP 2 and of the PSM servers' HTML5 gateway.",
        str(psm.WEB_PORT),
    ),
    "check_port": Help(
        "Check Port",
        f"Where both services check {psm.HEALTH_PATH} for {psm.HEALTH_EXPECT} over HTTPS. "
        "Empty: the HTML5 gateway port, as the guide sets.",
        "the HTML5 gateway port",
    ),
    "recommended": Help(
        "CyberArk's Recommendations",
        "Beyond the guide: Weighted Least Connections, and a TCP check of the RDP port "
        "alongside the HTTPS check, so a server whose IIS says PASS while its RDP service is "
        "stuck gets no users. Off: exactly the guide's settings.",
        "off",
    ),
    "label": Help(
        "PSM Server Label",
        "A name for the PSM server, e.g. PSM1. It is the real server's label in both virtual "
        "services.",
    ),
    "ip": Help("PSM Server IP Address", "The PSM server's address, e.g. 192.168.94.105."),
}
