"""A client of the appliance's REST API, used by the ``balancer`` command and the tests.

One client for both ways in: the Unix socket on the appliance itself, where the caller is the
OS user, or HTTPS from elsewhere with an API key, which acts as its owner. The appliance's
certificate is self-signed by default, so besides the usual trust in certificate authorities
the client can trust one certificate as it is, named by its SHA-256 fingerprint, and is then
checked during the TLS handshake, before the key is sent.

It speaks HTTP/1.1 with the standard library, one connection a request: every ``balancer``
command starts a Python of its own, and an HTTP library's import alone took longer than a whole
command may (README, Performance).
"""

from __future__ import annotations

import getpass
import hashlib
import http.client
import json
import os
import socket
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar
from urllib.parse import urlencode, urlsplit

if TYPE_CHECKING:
    from cryptography import x509

API = "/api/v1"


def api_socket(data_dir: Path) -> Path:
    """Where the management daemon's API listens: a Unix socket only root can reach."""
    return data_dir / "api.sock"


class ApiError(Exception):
    """The appliance said no (the message names the field and reason) or could not be reached."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Remote:
    """An appliance reached over HTTPS, ``url`` being ``https://host:port``.

    Its certificate is trusted when it has the SHA-256 ``fingerprint`` given (hex digits), or
    when the PEM text ``ca`` holds it or the authority that signed it, or by the system's
    authorities when neither is given; ``insecure`` trusts any certificate."""

    url: str
    key: str = field(repr=False)  # never in a traceback or a log
    ca: str | None = None
    fingerprint: str | None = None
    insecure: bool = False


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("balancer", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(str(self.path))
        except BaseException:
            sock.close()
            raise
        self.sock = sock


@dataclass(frozen=True)
class Response:
    status: int
    content_type: str
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


class Client:
    def __init__(
        self,
        where: Path | Remote,
        user: str | None = None,
        timeout: float = 60.0,
        *,
        base: int | None = None,
    ) -> None:
        """``where``: the API's Unix socket, or a remote appliance. Changes carry ``base`` as
        If-Match, so they are refused (409) if another revision was saved since."""
        self.where = where
        self.base = base
        self.timeout = timeout
        if isinstance(where, Remote):
            self._headers = {"Authorization": f"Bearer {where.key}"}
            self._context: ssl.SSLContext | None = _trust(where)
        else:
            self._headers = {"X-Balancer-User": user or getpass.getuser()}
            self._context = None

    def close(self) -> None:
        """Nothing is held between requests; kept so that a client is used as a context."""

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def call(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        if isinstance(self.where, Path) and not self.where.exists():
            raise ApiError(self._unreachable("no such socket"))
        headers = {"If-Match": str(self.base)} if self.base is not None and method != "GET" else {}
        content: bytes | BinaryIO | None = None
        if isinstance(body, bytes):  # bytes as they are
            content = body
            headers["Content-Type"] = "application/octet-stream"
        elif hasattr(body, "read"):  # an open file, such as an update archive: sent as read
            content = body
            headers["Content-Type"] = "application/octet-stream"
            headers["Content-Length"] = str(os.fstat(body.fileno()).st_size)
        elif body is not None:
            content = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        query = urlencode({k: v for k, v in params.items() if v is not None})
        try:
            response = self._request(method, API + path + (f"?{query}" if query else ""),
                                     content, headers)  # fmt: skip
        except (OSError, http.client.HTTPException) as error:
            raise ApiError(self._failed(error)) from None
        if response.status == 401 and isinstance(self.where, Remote):
            raise ApiError(
                f"the appliance at {self.where.url} refused the API key: it is wrong, or was "
                "revoked, or its owner removed (HTTP 401)",
                401,
            )
        if response.status >= 400:
            raise ApiError(_explain(response), response.status)
        if not response.body:
            return None
        if response.content_type.startswith("text/plain"):
            return response.text
        if response.content_type.startswith("application/gzip"):  # an archive, as it came
            return response.body
        return json.loads(response.body)

    def _request(
        self, method: str, target: str, content: bytes | BinaryIO | None, headers: dict[str, str]
    ) -> Response:
        connection: http.client.HTTPConnection
        if isinstance(self.where, Remote):
            parts = urlsplit(self.where.url)
            connection = http.client.HTTPSConnection(
                parts.hostname or "", parts.port, timeout=self.timeout, context=self._context
            )
        else:
            connection = _UnixConnection(self.where, self.timeout)
        try:
            connection.request(method, target, content, {**self._headers, **headers})
            answer = connection.getresponse()
            return Response(answer.status, answer.getheader("Content-Type", ""), answer.read())
        finally:
            connection.close()

    def _failed(self, error: BaseException) -> str:
        tls = _cause(error, ssl.SSLError)
        if not isinstance(self.where, Remote) or tls is None:
            return self._unreachable(str(error) or type(error).__name__)
        url = self.where.url
        if isinstance(tls, WrongCertificate):
            return (
                f"the appliance at {url} showed a certificate with SHA-256 fingerprint "
                f"{tls.shown}, not the one given: refused, the API key was not sent"
            )
        if isinstance(tls, ssl.SSLCertVerificationError):
            shown = _fingerprint_of(url)
            named = f"; its SHA-256 fingerprint is {shown}" if shown else ""
            return (
                f"the certificate of the appliance at {url} is not trusted "
                f"({tls.verify_message}){named}: if that is the appliance's own, give it as "
                "--fingerprint, or its certificate as --ca-file"
            )
        return f"TLS with the appliance at {url} failed: {tls.reason or tls}"

    def _unreachable(self, why: str) -> str:
        if isinstance(self.where, Remote):
            return (
                f"cannot reach the appliance at {self.where.url} ({why}): "
                "is it up, and are --url and its port right?"
            )
        return (
            f"cannot reach the appliance at {self.where} ({why}): "
            "is `balancer serve` running, and is --dir right?"
        )

    def get(self, path: str, **params: Any) -> Any:
        return self.call("GET", path, **params)

    def post(self, path: str, body: Any = None, **params: Any) -> Any:
        return self.call("POST", path, body, **params)

    def put(self, path: str, body: Any) -> Any:
        return self.call("PUT", path, body)

    def patch(self, path: str, body: Any) -> Any:
        return self.call("PATCH", path, body)

    def delete(self, path: str) -> Any:
        return self.call("DELETE", path)


def _explain(response: Response) -> str:
    try:
        detail = json.loads(response.body)["detail"]
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status}: {response.text.strip()[:200]}"
    if isinstance(detail, list):
        return "; ".join(
            f"{item['field']}: {item['reason']}" if item.get("field") else str(item["reason"])
            for item in detail
        )
    return str(detail)


def fingerprint(der: bytes) -> str:
    """A certificate's SHA-256 fingerprint as OpenSSL prints it: AB:CD:..."""
    return ":".join(f"{byte:02X}" for byte in hashlib.sha256(der).digest())


class WrongCertificate(ssl.SSLCertVerificationError):
    """The appliance showed a certificate other than the one trusted as it is."""

    def __init__(self, shown: str) -> None:
        super().__init__(f"certificate fingerprint {shown} is not the one given")
        self.shown = shown


class _Pinning(ssl.SSLContext):
    """Accepts, during the handshake, only a certificate whose SHA-256 is one of ``pins``."""

    pins: frozenset[str] = frozenset()


class _PinnedSocket(ssl.SSLSocket):
    def do_handshake(self, block: bool = False) -> None:
        super().do_handshake(block)
        context = self.context
        assert isinstance(context, _Pinning)
        der = self.getpeercert(binary_form=True) or b""
        if hashlib.sha256(der).hexdigest() not in context.pins:
            # SSLSocket closes itself when the handshake raises: nothing is ever sent.
            raise WrongCertificate(fingerprint(der))


class _PinnedObject(ssl.SSLObject):
    """The same check for asyncio's streams (httpx), which wrap a memory BIO, not a socket."""

    def do_handshake(self) -> None:
        super().do_handshake()
        context = self.context
        assert isinstance(context, _Pinning)
        der = self.getpeercert(binary_form=True) or b""
        if hashlib.sha256(der).hexdigest() not in context.pins:
            raise WrongCertificate(fingerprint(der))


def pinning(*pins: str) -> ssl.SSLContext:
    """A client context that takes only a certificate with one of the SHA-256 ``pins`` (hex
    digits, with or without colons), checked in the handshake: before anything is sent."""
    context = _Pinning(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the fingerprint is the check
    context.sslsocket_class = _PinnedSocket
    context.sslobject_class = _PinnedObject
    context.pins = frozenset(pin.replace(":", "").lower() for pin in pins)
    return context


def _trust(remote: Remote) -> ssl.SSLContext:
    # cryptography takes longer to import than a command on the Unix socket may take.
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    if remote.insecure:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    pins = {remote.fingerprint} if remote.fingerprint else set()
    authorities = []
    for certificate in x509.load_pem_x509_certificates(remote.ca.encode()) if remote.ca else []:
        if _is_authority(certificate):
            authorities.append(certificate.public_bytes(Encoding.PEM).decode())
        else:
            # A certificate that can sign no other is trusted as itself, whatever name the URL
            # uses: the appliance's own self-signed one is made for its hostname, not its IP.
            pins.add(hashlib.sha256(certificate.public_bytes(Encoding.DER)).hexdigest())
    if pins and not authorities:
        return pinning(*pins)
    if authorities:
        return ssl.create_default_context(cadata="".join(authorities))
    return ssl.create_default_context()


def _is_authority(certificate: x509.Certificate) -> bool:
    from cryptography import x509

    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    except x509.ExtensionNotFound:
        return False
    return constraints.value.ca


def _fingerprint_of(url: str) -> str | None:
    """The fingerprint of the certificate the appliance at ``url`` shows, if it answers."""
    parts = urlsplit(url)
    try:
        pem = ssl.get_server_certificate((parts.hostname or "", parts.port or 443), timeout=10)
    except (OSError, ValueError):
        return None
    return fingerprint(ssl.PEM_cert_to_DER_cert(pem))


E = TypeVar("E", bound=BaseException)


def _cause(error: BaseException, kind: type[E]) -> E | None:
    """The first exception of ``kind`` that ``error`` was raised from, if any."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, kind):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None
