"""Listening sockets for virtual services."""

from __future__ import annotations

import socket

from balancer.engines.builtin.relay import keepalive

BACKLOG = 4096
# Linux's IP_FREEBIND: bind a floating VIP that is not (yet) on this node, as HA needs.
IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)


def listen(ip: str, port: int) -> socket.socket:
    """A bound, listening, non-blocking socket; OSError says why not."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
        keepalive(sock)  # accepted sockets inherit it: no system calls per client
        sock.bind((ip, port))
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock
