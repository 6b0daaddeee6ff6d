"""Whether HAProxy can listen where a revision asks, found out before it reloads.

A reload that cannot bind fails inside HAProxy, which keeps the old worker, but the old worker
stops accepting for the two seconds HAProxy spends retrying: so the engine tries each new
address itself first, and a revision that cannot have one changes nothing at all.
"""

from __future__ import annotations

import errno
import os
import re
import socket

from balancer.model import Config
from balancer.model.types import each_port

# Linux's IP_FREEBIND, as HAProxy's `transparent` binds: a floating VIP this node does not hold
# now is no reason to refuse the revision.
IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)

_BIND = re.compile(r"^\s*bind\s+\[?([0-9A-Fa-f.:]+?)\]?:(\d+)(?:-(\d+))?(?:\s|$)", re.MULTILINE)


def listening(haproxy_cfg: str) -> set[tuple[str, int]]:
    """The addresses a haproxy.cfg (as ``render`` writes it) binds."""
    found = set()
    for ip, lo, hi in _BIND.findall(haproxy_cfg):
        found |= {(ip, port) for port in range(int(lo), int(hi or lo) + 1)}
    return found


def unbindable(config: Config, held: set[tuple[str, int]]) -> str | None:
    """Why ``config`` cannot run, naming the field, if one of its new addresses is taken."""
    for vs in config.virtual_services:
        ip = str(vs.ip)
        for port in each_port(vs.ports):
            if (ip, port) in held:
                continue
            why = _try(ip, port)
            if why is not None:
                field = f"virtual_services[{vs.label}].ports"
                return f"{field}: cannot bind socket ({why}) for [{ip}:{port}]"
    return None


def _try(ip: str, port: int) -> str | None:
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
        try:
            sock.bind((ip, port))
        except OSError as error:
            why = os.strerror(error.errno) if error.errno else str(error)
            if error.errno == errno.EACCES and port < 1024:
                why += "; ports below 1024 need root"
            return why
    return None
