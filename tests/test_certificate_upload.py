"""The operator's own WebUI certificate: checked (it parses, the key is the certificate's, it
is valid now, OpenSSL takes it), then served on the HTTPS port from the next handshake; a bad
upload is refused naming the field and the reason, and the old certificate is still served."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import NameOID

from balancer.certificates import checked_pair, fingerprint
from balancer.validate import Invalid
from tests.appliance import WEBUI_HOST, Appliance, appliance
from tests.test_maintenance_restart import signed_in

NOW = datetime.now(UTC)
CERTIFICATE = "/lbadmin/local-configuration/certificate"


def _key(kind: str = "ec") -> CertificateIssuerPrivateKeyTypes:
    if kind == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(65537, 2048 if kind == "rsa" else 1024)


def _pem_key(key: CertificateIssuerPrivateKeyTypes, passphrase: bytes | None = None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def _certificate(
    key: CertificateIssuerPrivateKeyTypes,
    name: str = "lb.example.test",
    *,
    start: datetime = NOW - timedelta(days=1),
    end: datetime = NOW + timedelta(days=90),
    issuer: tuple[CertificateIssuerPrivateKeyTypes, str] | None = None,
) -> bytes:
    signer, issuer_name = issuer or (key, name)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(signer, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def _fingerprint_of(pem: bytes) -> str:
    cert = x509.load_pem_x509_certificates(pem)[0]
    return fingerprint(cert.public_bytes(serialization.Encoding.DER))


# --- the checks, in process ---------------------------------------------------------------------


def test_a_good_pair_becomes_one_pem_file_key_first() -> None:
    key = _key()
    cert = _certificate(key)
    pem = checked_pair(cert, _pem_key(key), now=NOW)
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert _fingerprint_of(pem[pem.index(b"-----BEGIN CERTIFICATE") :]) == _fingerprint_of(cert)


def test_the_key_may_be_in_the_certificates_file_and_a_chain_may_follow() -> None:
    ca_key, key = _key("rsa"), _key()
    chain = _certificate(key, issuer=(ca_key, "Example CA")) + _certificate(ca_key, "Example CA")
    pem = checked_pair(_pem_key(key) + chain, b"", now=NOW)
    assert pem.count(b"-----BEGIN CERTIFICATE-----") == 2


@pytest.mark.parametrize(
    ("case", "field", "reason"),
    [
        ("mismatched key", "key", "is not the key of the certificate for 'CN=lb.example.test'"),
        ("garbage certificate", "certificate", "is not a PEM certificate"),
        ("garbage key", "key", "is not a PEM private key"),
        ("encrypted key", "key", "is encrypted: upload it without a passphrase"),
        ("expired", "certificate", "expired on"),
        ("not yet valid", "certificate", "is not valid before"),
        ("weak RSA key", "key", "is RSA 1024 bits; at least 2048 are needed"),
        ("too big", "certificate", "bytes; at most 65536"),
    ],
)
def test_a_bad_upload_is_refused_naming_field_and_reason(
    case: str, field: str, reason: str
) -> None:
    key = _key()
    cert, pem_key = _certificate(key), _pem_key(key)
    if case == "mismatched key":
        pem_key = _pem_key(_key())
    elif case == "garbage certificate":
        cert = b"-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n"
    elif case == "garbage key":
        pem_key = b"\x00\x01 not a key"
    elif case == "encrypted key":
        pem_key = _pem_key(key, b"secret")
    elif case == "expired":
        cert = _certificate(key, start=NOW - timedelta(days=400), end=NOW - timedelta(days=1))
    elif case == "not yet valid":
        cert = _certificate(key, start=NOW + timedelta(days=1), end=NOW + timedelta(days=90))
    elif case == "weak RSA key":
        weak = _key("weak")
        cert, pem_key = _certificate(weak), _pem_key(weak)
    elif case == "too big":
        cert += b"#" * 65536
    with pytest.raises(Invalid) as refused:
        checked_pair(cert, pem_key, now=NOW)
    (problem,) = refused.value.problems
    assert problem.field == field
    assert reason in problem.reason


# --- served by the real appliance ---------------------------------------------------------------


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Appliance]:
    with appliance(tmp_path) as running:
        yield running


def _served(port: int) -> str:
    pem = ssl.get_server_certificate((WEBUI_HOST, port), timeout=10).encode()
    return _fingerprint_of(pem)


def test_an_uploaded_certificate_is_served_and_a_bad_one_leaves_it_served(box: Appliance) -> None:
    first = _served(box.https_port)
    with signed_in(box.https_port) as (client, csrf):
        key = _key()
        cert = _certificate(key)
        reply = client.post(
            CERTIFICATE,
            data={"csrf_token": csrf},
            files={"certificate": ("lb.crt", cert), "key": ("lb.key", _pem_key(key))},
        )
        assert reply.status_code == 200
        assert "The new certificate is served from now on" in reply.text
        assert _served(box.https_port) == _fingerprint_of(cert) != first
        assert _fingerprint_of(cert) in reply.text
        entry = box.client.get("/audit", limit=1)[0]
        assert (entry["author"], entry["action"]) == ("loadbalancer", "webui_certificate")

        expired_key = _key()
        for files, reason in [
            ({"certificate": ("lb.crt", cert), "key": ("k", _pem_key(_key()))}, "is not the key"),
            ({"certificate": ("lb.crt", b"garbage"), "key": ("k", b"")}, "is not a PEM cert"),
            (
                {
                    "certificate": (
                        "old.crt",
                        _certificate(expired_key, end=NOW - timedelta(days=1)),
                    ),
                    "key": ("k", _pem_key(expired_key)),
                },
                "expired on",
            ),
        ]:
            reply = client.post(CERTIFICATE, data={"csrf_token": csrf}, files=files)
            assert reply.status_code == 422
            assert "The certificate was not installed" in reply.text
            assert reason in reply.text
            assert _served(box.https_port) == _fingerprint_of(cert)
