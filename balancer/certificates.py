"""Self-signed certificates: the lab's PSM servers have them, as most PSM servers' IIS do, and
the tests' TLS servers too.

A certificate lives in one PEM file, the key then the certificate, made on first use and kept,
so a restarted server shows the same certificate.
"""

from __future__ import annotations

import os
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

VALIDITY = timedelta(days=3650)


def certificate(path: Path, name: str) -> Path:
    """``path``, holding a certificate for ``name`` (CN and DNS name), made if missing."""
    if not path.exists():
        # Written aside and renamed so a reader never sees half a file.
        scratch = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(_self_signed(name))
        os.replace(scratch, path)
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
