"""Certificates: the self-signed ones the WebUI starts with (and the lab's PSM servers have, as
most PSM servers' IIS do), and the operator's own that replaces the WebUI's.

A certificate lives in one PEM file, the key then the certificate (and its chain), made on first
use and kept, so a restarted server shows the same certificate. An operator's upload is checked
whole before it replaces the file: it parses, the key is the certificate's, the certificate is
valid now, and OpenSSL takes the pair; the HTTPS listener then serves it from its next
handshake, and keeps the old one if anything goes wrong.
"""

from __future__ import annotations

import os
import re
import ssl
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import NameOID

from balancer.validate import Invalid, Problem

VALIDITY = timedelta(days=3650)
# What OpenSSL's default security level (Debian's 2) still takes for an RSA key.
RSA_MIN_BITS = 2048
# Far more than a certificate, its chain and a key take; an upload beyond it is not one.
MAX_PEM_SIZE = 64 << 10
_SHA256_HEX = re.compile(r"[0-9A-F]{64}")


def certificate(path: Path, name: str) -> Path:
    """``path``, holding a certificate for ``name`` (CN and DNS name), made if missing."""
    if not path.exists():
        write_private(path, _self_signed(name))
    return path


def server_context(path: Path, name: str) -> ssl.SSLContext:
    """A server TLS context with the certificate in ``path``, made for ``name`` if missing."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate(path, name))
    return context


def _self_signed(name: str) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))  # a client's clock may be behind
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem_key = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return pem_key + cert.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True, slots=True)
class CertificateInfo:
    """What the WebUI shows of a certificate."""

    subject: str
    issuer: str
    names: tuple[str, ...]  # the subject alternative names a browser checks
    not_before: datetime
    not_after: datetime
    fingerprint: str  # SHA-256, as browsers show it: AB:CD:...
    self_signed: bool


def describe(pem: bytes) -> CertificateInfo:
    """The first certificate in ``pem``."""
    cert = x509.load_pem_x509_certificates(pem)[0]
    try:
        names = tuple(
            str(name.value)
            for name in cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        )
    except x509.ExtensionNotFound:
        names = ()
    return CertificateInfo(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        names=names,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        fingerprint=fingerprint(cert.public_bytes(serialization.Encoding.DER)),
        self_signed=cert.issuer == cert.subject,
    )


def fingerprint(der: bytes) -> str:
    digest = hashes.Hash(hashes.SHA256())
    digest.update(der)
    return ":".join(f"{byte:02X}" for byte in digest.finalize())


def parse_fingerprint(text: str) -> str:
    """``text`` as ``fingerprint`` writes it. ``text`` may be as openssl prints it
    (``sha256 Fingerprint=AB:CD:...``), with or without colons, in either case; ValueError with
    the reason if it is no SHA-256 fingerprint."""
    digits = text.rpartition("=")[2].strip().replace(":", "").upper()
    if not _SHA256_HEX.fullmatch(digits):
        raise ValueError("must be a SHA-256 fingerprint, 64 hex digits, with or without colons")
    return ":".join(digits[i : i + 2] for i in range(0, len(digits), 2))


def checked_pair(certificate: bytes, key: bytes, *, now: datetime) -> bytes:
    """One PEM file, the key then the certificate and its chain, from an operator's upload; or
    Invalid naming ``certificate`` or ``key`` and the reason. ``key`` may be empty when the
    certificate's file holds the key too."""
    for field, data in (("certificate", certificate), ("key", key)):
        if len(data) > MAX_PEM_SIZE:
            raise Invalid([Problem(field, f"is {len(data)} bytes; at most {MAX_PEM_SIZE}")])
    chain = _certificates(certificate)
    private = _private_key(key if key.strip() else certificate)
    leaf = chain[0]
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if private.public_key().public_bytes(der, spki) != leaf.public_key().public_bytes(der, spki):
        reason = f"is not the key of the certificate for {leaf.subject.rfc4514_string()!r}"
        raise Invalid([Problem("key", reason)])
    when = "%Y-%m-%d %H:%M UTC"
    if leaf.not_valid_after_utc <= now:
        reason = f"expired on {leaf.not_valid_after_utc:{when}}: browsers refuse it"
        raise Invalid([Problem("certificate", reason)])
    if leaf.not_valid_before_utc > now:
        reason = f"is not valid before {leaf.not_valid_before_utc:{when}}: browsers refuse it"
        raise Invalid([Problem("certificate", reason)])
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ) + b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in chain)
    _openssl_takes(pem)
    return pem


def _certificates(data: bytes) -> list[x509.Certificate]:
    try:
        chain = x509.load_pem_x509_certificates(data)
    except ValueError:
        reason = "is not a PEM certificate: expected -----BEGIN CERTIFICATE-----"
        raise Invalid([Problem("certificate", reason)]) from None
    return chain


def _private_key(data: bytes) -> PrivateKeyTypes:
    start = data.find(b"-----BEGIN ")
    while start != -1 and b"PRIVATE KEY-----" not in data[start : start + 40]:
        start = data.find(b"-----BEGIN ", start + 1)
    if start == -1:
        reason = "is not a PEM private key: expected -----BEGIN PRIVATE KEY-----"
        raise Invalid([Problem("key", reason)])
    try:
        key = serialization.load_pem_private_key(data[start:], password=None)
    except TypeError:
        reason = "is encrypted: upload it without a passphrase (openssl pkey -in key.pem)"
        raise Invalid([Problem("key", reason)]) from None
    except (ValueError, UnsupportedAlgorithm) as error:
        raise Invalid([Problem("key", f"cannot be read: {error}")]) from None
    if isinstance(key, dsa.DSAPrivateKey):
        raise Invalid([Problem("key", "is a DSA key, which TLS no longer uses")])
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size < RSA_MIN_BITS:
        reason = f"is RSA {key.key_size} bits; at least {RSA_MIN_BITS} are needed"
        raise Invalid([Problem("key", reason)])
    return key


def _openssl_takes(pem: bytes) -> None:
    """Load ``pem`` as the listener will, so what OpenSSL refuses is refused here."""
    with tempfile.NamedTemporaryFile(suffix=".pem") as scratch:
        scratch.write(pem)
        scratch.flush()
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(scratch.name)
        except ssl.SSLError as error:
            reason = f"is refused by OpenSSL: {error.reason or error}"
            raise Invalid([Problem("certificate", reason)]) from None


class ServedCertificate:
    """The WebUI's certificate file and the TLS contexts of the listeners that serve it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._contexts: list[ssl.SSLContext] = []

    def serve_with(self, context: ssl.SSLContext) -> None:
        self._contexts.append(context)

    def forget(self, context: ssl.SSLContext) -> None:
        self._contexts.remove(context)

    def info(self) -> CertificateInfo:
        return describe(self.path.read_bytes())

    def replace(self, pem: bytes) -> CertificateInfo:
        """Serve ``pem`` (from ``checked_pair``) from the next handshake on, and keep it."""
        old = self.path.read_bytes()
        write_private(self.path, pem)
        try:
            self._load()
        except (OSError, ssl.SSLError):
            write_private(self.path, old)
            self._load()
            raise
        return self.info()

    def _load(self) -> None:
        # A context given a new chain uses it for every handshake after; connections already
        # open keep theirs.
        for context in self._contexts:
            context.load_cert_chain(self.path)


def write_private(path: Path, data: bytes) -> None:
    """Write ``path`` readable by its owner only (it may hold a key)."""
    # Written aside and renamed so a reader never sees half a file.
    scratch = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(scratch, path)
