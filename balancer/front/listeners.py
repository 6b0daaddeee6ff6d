"""Where the API and the WebUI listen: the Unix socket, trusted and local, and the network,
HTTPS (and plain HTTP if asked for), where every caller must sign in or bring a key.

In an HA pair the HTTPS port is also where the peer calls (``PairTLS``): a client asking for
``trust.PAIR_SNI`` gets this node's pair certificate instead of the WebUI's, and every client may
show a certificate, which the connection keeps for its requests (``PEER_CERTIFICATE``) and the
gate checks for ``/api/v1/peer/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import ssl
from collections.abc import Iterator
from datetime import UTC, datetime
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from starlette.types import ASGIApp
from uvicorn.protocols.http.h11_impl import H11Protocol

from balancer.ha import trust
from balancer.model import NodeSettings
from balancer.model.types import IPAddress

BACKLOG = 128
# The key of a request's ``scope["state"]`` holding the certificate its client showed and the
# handshake verified (DER), or None.
PEER_CERTIFICATE = "peer_certificate"


class Listener(uvicorn.Server):
    """One uvicorn server of several in the daemon, which handles signals for them all."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class _Protocol(H11Protocol):
    """uvicorn's HTTP/1.1, keeping the certificate the client showed for the connection's
    requests."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        tls: ssl.SSLObject | None = transport.get_extra_info("ssl_object")
        shown = tls.getpeercert(binary_form=True) if tls is not None else None
        # The connection's own copy: each request's scope["state"] is a copy of it.
        self.app_state = {**self.app_state, PEER_CERTIFICATE: shown}


def listener(app: ASGIApp, certificate: Path | None = None) -> Listener:
    return Listener(
        uvicorn.Config(
            app,
            http=_Protocol,
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


class PairTLS:
    """The pair's part of the HTTPS listeners, for one run of the management service.

    Paired, each listener's context asks every client for a certificate signed by the pair's
    authority, optionally: a browser shows none and gets the WebUI as before. A client asking for
    ``trust.PAIR_SNI`` is served from ``trust.server_context``: this node's pair certificate,
    and a certificate checked against the pair's authority alone. (OpenSSL keeps the first
    context's verify mode, so CERT_OPTIONAL is the listener's; the swapped context's
    CERT_REQUIRED is not applied. A peer without a certificate is refused by the gate.)
    Standalone, the listeners ask for nothing. Pairing and Break Clustered Pair change this
    without a restart: ``set`` reaches every new handshake.
    """

    def __init__(self) -> None:
        self._contexts: list[ssl.SSLContext] = []
        self._trust: trust.Trust | None = None
        self._peer: IPAddress | None = None
        self._server: ssl.SSLContext | None = None

    @property
    def peer_address(self) -> IPAddress | None:
        return self._peer if self._trust is not None else None

    def serve_on(self, context: ssl.SSLContext) -> None:
        """Take part in ``context``, an HTTPS listener's, from its next handshake."""
        self._contexts.append(context)
        self._apply(context)

    def set(self, pair: trust.Trust | None, peer: IPAddress | None) -> None:
        """Paired with the peer at ``peer``, showing and trusting ``pair`` (as ``trust.load``
        gives it); standalone if either is None."""
        if pair is None or peer is None:
            self._trust, self._peer, self._server = None, None, None
        else:
            self._trust, self._peer, self._server = pair, peer, trust.server_context(pair)
        for context in self._contexts:
            self._apply(context)

    def admits(self, shown: bytes | None) -> bool:
        """Whether ``shown`` (DER, as the handshake verified it) is the peer's pair certificate
        now: of the present pair's authority (a context keeps every authority it was given),
        of the peer's address alone."""
        if shown is None or self._trust is None or self._peer is None:
            return False
        try:
            certificate = x509.load_der_x509_certificate(shown)
            trust.verify(certificate, self._trust.authority, self._peer, now=datetime.now(UTC))
        except (ValueError, trust.TrustError):
            return False
        return True

    def _apply(self, context: ssl.SSLContext) -> None:
        if self._trust is None:
            context.sni_callback = None
            context.verify_mode = ssl.CERT_NONE
            return
        pem = self._trust.authority.public_bytes(serialization.Encoding.PEM).decode()
        context.load_verify_locations(cadata=pem)
        context.verify_mode = ssl.CERT_OPTIONAL
        context.sni_callback = self._sni

    def _sni(self, connection: ssl.SSLObject, name: str | None, _: ssl.SSLContext) -> None:
        if name == trust.PAIR_SNI and self._server is not None:
            connection.context = self._server


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
