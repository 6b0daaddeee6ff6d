"""Trust between the two nodes of a pair: the pair's certificate authority, each node's
certificate, mutual TLS, and the fingerprint the operator confirms before pairing.

Pairing makes the pair's authority on the Primary (``make_ca``). Each node makes its own key and
a request for a certificate of its address (``make_key_and_csr``); its key never leaves it. The
Primary checks the request and signs it (``sign_csr``); the node checks what it gets back
(``verify``) and keeps it. From then on every connection between the nodes is TLS 1.3 where
each side shows its certificate and accepts only the pair authority's (``server_context``,
``client_context``). A node reaches its peer on the peer's WebUI HTTPS port, asking for
``PAIR_SNI``; the peer's listener then shows its pair certificate (balancer.front.listeners).

Before the Primary sends the peer's password, the operator confirms the fingerprint of the
certificate the peer's WebUI serves, as the peer's ``balancer serve`` printed it
(``confirm_peer``); the connection that then carries the password must trust that certificate
alone (``balancer.client.Remote(fingerprint=...)`` checks it in the handshake).

The building and checking of certificates is pure and takes the time from the caller; files and
sockets are at the end. Everything lives in the node's data directory, in ``pair/``, readable by
its owner only: the authority's key on the Primary, this node's key and certificate, and the
authority's certificate.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import cast

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from balancer.certificates import fingerprint, parse_fingerprint, write_private
from balancer.model.types import IPAddress

# The pair lives as long as its authority; a node's certificate ends with it, so re-pairing is
# the one renewal. Twenty years stays within the dates every TLS stack reads.
CA_VALIDITY = timedelta(days=20 * 365)
# The peer's clock may be behind this node's.
CLOCK_SKEW = timedelta(days=1)
CA_NAME = "Balancer HA pair authority"
CONNECT_TIMEOUT = 10.0
# The name a node asks for when it connects to its peer's HTTPS port: there the peer's listener
# shows its pair certificate and takes this node's, rather than the WebUI's (balancer.front).
# ".invalid" is reserved: no real host has it.
PAIR_SNI = "pair.balancer.invalid"
DIRECTORY = "pair"
CA_FILE = "ca.pem"
CA_KEY_FILE = "ca-key.pem"  # the Primary's only
NODE_FILE = "node.pem"
NODE_KEY_FILE = "node-key.pem"
_CURVE = ec.SECP256R1


class TrustError(Exception):
    """A certificate, a request, a file or a peer is not what the pair trusts; one line."""


class PeerUnreachable(TrustError):
    """The peer did not answer on its WebUI's port."""


class WrongFingerprint(TrustError):
    """The peer showed a certificate other than the one the operator confirmed."""

    def __init__(self, message: str, shown: str) -> None:
        super().__init__(message)
        self.shown = shown


@dataclass(frozen=True)
class Authority:
    """The pair's certificate authority: its key signs the nodes' certificates."""

    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate


def make_ca(*, now: datetime) -> Authority:
    """A new authority for a pair, valid from ``now`` (less the clock skew) for CA_VALIDITY."""
    key = ec.generate_private_key(_CURVE())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME)])
    usage = x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + CA_VALIDITY)
        # It signs the two nodes' certificates and no other authority.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Authority(key, certificate)


def make_key_and_csr(
    address: IPAddress,
) -> tuple[ec.EllipticCurvePrivateKey, x509.CertificateSigningRequest]:
    """This node's new key, and its request for a certificate of ``address``."""
    key = ec.generate_private_key(_CURVE())
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, str(address))]))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(address)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, request


def sign_csr(
    authority: Authority,
    request: x509.CertificateSigningRequest,
    address: IPAddress,
    *,
    now: datetime,
) -> x509.Certificate:
    """The certificate of the node at ``address``, for both ends of a connection, if
    ``request`` is signed by its own key (the node holds that key) and names ``address`` alone.

    Only the request's key is taken from it; the names and uses are the pair's."""
    if not request.is_signature_valid:
        raise TrustError(f"the certificate request of {address} is not signed by its own key")
    shown = _other_names(request.extensions, address)
    if shown is not None:
        raise TrustError(
            f"the certificate request of {address} names {shown}, not {address}: refused"
        )
    public = request.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey) or public.curve.name != _CURVE.name:
        raise TrustError(f"the certificate request of {address} is not for a P-256 key")
    # An authority past its time signs nothing the peer would take.
    _in_time("the pair authority's", authority.certificate, now)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, str(address))]))
        .issuer_name(authority.certificate.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(authority.certificate.not_valid_after_utc)
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(address)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(authority.key.public_key()),
            critical=False,
        )
        .sign(authority.key, hashes.SHA256())
    )


def verify(
    certificate: x509.Certificate,
    authority: x509.Certificate,
    address: IPAddress,
    *,
    now: datetime,
) -> None:
    """Raise TrustError unless ``certificate`` is the pair's for the node at ``address`` at
    ``now``: signed by ``authority``, for that address, and good to serve and to connect."""
    _in_time("the pair authority's", authority, now)
    _in_time(f"{address}'s", certificate, now)
    shown = _other_names(certificate.extensions, address)
    if shown is not None:
        raise TrustError(f"the certificate of {address} is for {shown}: it is not the pair's")
    policy = PolicyBuilder().store(Store([authority])).time(now).max_chain_depth(0)
    try:
        policy.build_server_verifier(x509.IPAddress(address)).verify(certificate, [])
        policy.build_client_verifier().verify(certificate, [])
    except VerificationError as error:
        # What follows the reason is a dump of the certificate, no use to an operator.
        reason = " ".join(str(error).split(" (encountered")[0].split())
        raise TrustError(f"the certificate of {address} is not the pair's: {reason}") from None


def _in_time(whose: str, certificate: x509.Certificate, now: datetime) -> None:
    when = "%Y-%m-%d %H:%M UTC"
    if certificate.not_valid_after_utc <= now:
        raise TrustError(
            f"{whose} certificate expired on {certificate.not_valid_after_utc:{when}}: "
            "break the pair and pair the nodes again"
        )
    if certificate.not_valid_before_utc > now:
        raise TrustError(
            f"{whose} certificate is not valid before {certificate.not_valid_before_utc:{when}}: "
            "is this node's clock right?"
        )


def _other_names(extensions: x509.Extensions, address: IPAddress) -> str | None:
    """None if the subject alternative names are ``address`` alone, else what they are."""
    try:
        names = list(extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        names = []
    if names == [x509.IPAddress(address)]:
        return None
    return ", ".join(str(name.value) for name in names) or "no address"


# Files: the pair's directory in the node's data directory.


def directory(data_dir: Path) -> Path:
    return data_dir / DIRECTORY


def save_authority(pair_dir: Path, authority: Authority) -> None:
    """Keep the pair's authority on the Primary, which alone signs."""
    _write(pair_dir / CA_KEY_FILE, _pem_key(authority.key))
    _write(pair_dir / CA_FILE, authority.certificate.public_bytes(serialization.Encoding.PEM))


def save_key(pair_dir: Path, key: ec.EllipticCurvePrivateKey) -> None:
    """Keep this node's key while its certificate is being signed, and after."""
    _write(pair_dir / NODE_KEY_FILE, _pem_key(key))


def save_certificate(
    pair_dir: Path,
    certificate: x509.Certificate,
    authority: x509.Certificate,
    address: IPAddress,
    *,
    now: datetime,
) -> None:
    """Keep this node's certificate and the authority's, once they are checked: the certificate
    is the pair's for ``address`` and is for the key ``save_key`` kept."""
    verify(certificate, authority, address, now=now)
    key = _load_key(pair_dir / NODE_KEY_FILE)
    if _spki(key.public_key()) != _spki(certificate.public_key()):
        raise TrustError(f"the certificate of {address} is not for this node's key: refused")
    _write(pair_dir / NODE_FILE, certificate.public_bytes(serialization.Encoding.PEM))
    _write(pair_dir / CA_FILE, authority.public_bytes(serialization.Encoding.PEM))


@dataclass(frozen=True)
class Trust:
    """What this node of a pair shows and accepts, as loaded and checked from its files."""

    authority: x509.Certificate
    certificate: x509.Certificate
    certificate_file: Path
    key_file: Path


def load(pair_dir: Path, address: IPAddress, *, now: datetime) -> Trust:
    """This node's certificate, key and the authority's certificate from ``pair_dir``, checked
    with ``verify``; TrustError naming the file and what is wrong with it."""
    authority = _load_certificate(pair_dir / CA_FILE)
    certificate = _load_certificate(pair_dir / NODE_FILE)
    key_file = pair_dir / NODE_KEY_FILE
    if _spki(_load_key(key_file).public_key()) != _spki(certificate.public_key()):
        raise TrustError(f"{key_file}: is not the key of {pair_dir / NODE_FILE}")
    verify(certificate, authority, address, now=now)
    return Trust(authority, certificate, pair_dir / NODE_FILE, key_file)


def load_authority(pair_dir: Path) -> Authority:
    """The pair's authority, on the Primary; TrustError naming the file and what is wrong."""
    key = _load_key(pair_dir / CA_KEY_FILE)
    certificate = _load_certificate(pair_dir / CA_FILE)
    if _spki(key.public_key()) != _spki(certificate.public_key()):
        raise TrustError(f"{pair_dir / CA_KEY_FILE}: is not the key of {pair_dir / CA_FILE}")
    return Authority(key, certificate)


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_private(path, data)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _spki(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        reason = "missing; this node is not paired, or its pairing did not finish"
        raise TrustError(f"{path}: {reason}") from None
    except OSError as error:
        raise TrustError(f"{path}: cannot be read ({error.strerror or error})") from None


def _load_certificate(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(_read(path))
    except ValueError:
        raise TrustError(f"{path}: is not a PEM certificate; it is damaged") from None


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(_read(path), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise TrustError(f"{path}: is not a PEM private key; it is damaged") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TrustError(f"{path}: is not an EC key, which the pair makes")
    return key


# Mutual TLS between the nodes.


def server_context(trust: Trust) -> ssl.SSLContext:
    """For the node that listens: TLS 1.3, showing this node's certificate, and taking only a
    client that shows a certificate signed by the pair's authority."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _pair(context, trust)
    context.verify_mode = ssl.CERT_REQUIRED
    return context


class _PeerSocket(ssl.SSLSocket):
    def do_handshake(self, block: bool = False) -> None:
        super().do_handshake(block)
        cast("_PeerContext", self.context).check(self.getpeercert(binary_form=True))


class _PeerObject(ssl.SSLObject):
    # asyncio's and anyio's streams, so httpx's, come this way.
    def do_handshake(self) -> None:
        super().do_handshake()
        cast("_PeerContext", self.context).check(self.getpeercert(binary_form=True))


class _PeerContext(ssl.SSLContext):
    """Sends PAIR_SNI, whatever name the caller connects by, and takes only the certificate of
    ``peer``: Python's TLS checks the name it sends, which here is not the peer's address."""

    peer: IPAddress
    sslsocket_class = _PeerSocket
    sslobject_class = _PeerObject

    def wrap_socket(
        self,
        sock: socket.socket,
        server_side: bool = False,
        do_handshake_on_connect: bool = True,
        suppress_ragged_eofs: bool = True,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLSocket:
        return super().wrap_socket(
            sock, server_side, do_handshake_on_connect, suppress_ragged_eofs, PAIR_SNI, session
        )

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        return super().wrap_bio(incoming, outgoing, server_side, PAIR_SNI, session)

    def check(self, shown: bytes | None) -> None:
        """After the handshake, which checked the certificate is the pair authority's: it must
        be of ``peer`` alone."""
        names = (
            _other_names(x509.load_der_x509_certificate(shown).extensions, self.peer)
            if shown
            else "no certificate"
        )
        if names is not None:
            # errno and strerror both: anyio reads the strerror of a failed handshake.
            raise ssl.SSLCertVerificationError(
                1, f"the peer showed the pair's certificate of {names}, not of {self.peer}"
            )


def client_context(trust: Trust, peer: IPAddress) -> ssl.SSLContext:
    """For the node that connects to its peer at ``peer``: TLS 1.3, showing this node's
    certificate, asking for the pair's listener (PAIR_SNI), and taking only the pair's
    certificate of ``peer``."""
    context = _PeerContext(ssl.PROTOCOL_TLS_CLIENT)
    context.peer = peer
    context.check_hostname = False  # the name sent is PAIR_SNI; check() takes the address
    context.verify_mode = ssl.CERT_REQUIRED
    _pair(context, trust)
    return context


def _pair(context: ssl.SSLContext, trust: Trust) -> None:
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_verify_locations(
        cadata=trust.authority.public_bytes(serialization.Encoding.PEM).decode()
    )
    context.load_cert_chain(trust.certificate_file, trust.key_file)


# The peer's WebUI certificate, which the operator confirms.


def peer_fingerprint(address: IPAddress, port: int, *, timeout: float = CONNECT_TIMEOUT) -> str:
    """The SHA-256 fingerprint of the certificate the peer's WebUI serves on ``port``, as
    ``balancer serve`` prints it (AB:CD:...); PeerUnreachable if it does not answer."""
    try:
        pem = ssl.get_server_certificate((str(address), port), timeout=timeout)
    except (OSError, ValueError) as error:
        why = getattr(error, "strerror", None) or str(error) or type(error).__name__
        raise PeerUnreachable(
            f"cannot reach the peer at {_where(address, port)} ({why}): is Balancer serving "
            "there, and is the port open between the nodes?"
        ) from None
    return fingerprint(ssl.PEM_cert_to_DER_cert(pem))


def confirm_peer(
    address: IPAddress, port: int, expected: str, *, timeout: float = CONNECT_TIMEOUT
) -> None:
    """Raise WrongFingerprint unless the certificate the peer's WebUI serves has the fingerprint
    ``expected``, the one the operator confirmed (as ``balancer serve`` prints it, or as bare
    hex digits)."""
    try:
        confirmed = parse_fingerprint(expected)
    except ValueError as error:
        raise TrustError(f"fingerprint {expected!r}: {error}") from None
    shown = peer_fingerprint(address, port, timeout=timeout)
    if shown != confirmed:
        raise WrongFingerprint(
            f"the peer at {_where(address, port)} showed a certificate with SHA-256 fingerprint "
            f"{shown}, not the one confirmed ({confirmed}): refused, its password was not sent",
            shown,
        )


def _where(address: IPAddress, port: int) -> str:
    host = f"[{address}]" if isinstance(address, ipaddress.IPv6Address) else str(address)
    return f"{host}:{port}"
