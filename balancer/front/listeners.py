"""Where the API and the WebUI listen: the Unix socket, trusted and local, and the network,
HTTPS (and plain HTTP if asked for), where every caller must sign in or bring a key."""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

import uvicorn
from starlette.types import ASGIApp

from balancer.model import NodeSettings

BACKLOG = 128


class Listener(uvicorn.Server):
    """One uvicorn server of several in the daemon, which handles signals for them all."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def listener(app: ASGIApp, certificate: Path | None = None) -> Listener:
    return Listener(
        uvicorn.Config(
            app,
            log_config=None,
            access_log=False,
            lifespan="off",
            # The client's address is the peer's: no proxy may rewrite it, or the sign-in
            # throttle would count failures against whatever address a header names.
            proxy_headers=False,
            server_header=False,
            ssl_certfile=certificate,  # the key is in the same PEM file
        )
    )


def network_sockets(node: NodeSettings) -> list[tuple[socket.socket, bool]]:
    """The WebUI's and the API's network sockets: HTTPS, and plain HTTP if asked for. Every
    port is taken before anything starts, so a port in use changes nothing."""
    sockets = [(network_socket(node.listen_address, node.https_port), True)]
    if node.http_port is not None:
        try:
            sockets.append((network_socket(node.listen_address, node.http_port), False))
        except OSError:
            sockets[0][0].close()
            raise
    return sockets


def unix_socket(path: Path) -> socket.socket:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)  # never world-connectable, not even for an instant
    try:
        sock.bind(str(path))
    finally:
        os.umask(old)
    sock.listen(BACKLOG)
    return sock


def network_socket(address: IPv4Address | IPv6Address | None, port: int) -> socket.socket:
    """A listening TCP socket on ``address``, or on every address (IPv6 and IPv4) if None."""
    if address is None:
        try:
            sock = _bound(socket.AF_INET6, "::", port, dual_stack=True)
        except OSError as error:
            if error.errno not in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL):  # IPv6 is off
                raise
            sock = _bound(socket.AF_INET, "0.0.0.0", port)
    else:
        family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
        sock = _bound(family, str(address), port)
    sock.listen(BACKLOG)
    return sock


def _bound(family: int, host: str, port: int, *, dual_stack: bool = False) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # A restarted daemon takes its port back at once, whatever is left in TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if dual_stack:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        raise OSError(error.errno, f"cannot listen on {where}: {error.strerror}") from None
    return sock
