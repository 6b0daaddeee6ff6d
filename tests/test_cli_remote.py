"""`balancer --url https://...` from elsewhere, against a real appliance's HTTPS listener: an API
key acts as its owner, the self-signed certificate is trusted by its fingerprint or its file and
anything else refused before the key is sent, and every failure is one line and a non-zero exit."""

from __future__ import annotations

import hashlib
import re
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from ipaddress import ip_address
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from cryptography.x509.oid import NameOID

from balancer import certificates
from tests.appliance import WEBUI_HOST, Appliance, appliance, free_port
from tests.test_cli import balancer

VIP = "127.96.3.100"


@dataclass(frozen=True)
class Remote:
    box: Appliance
    url: str
    certificate: Path  # the appliance's certificate alone, as an operator would copy it
    fingerprint: str  # as `openssl x509 -fingerprint -sha256` prints it

    def env(self, key: str, **more: str) -> dict[str, str]:
        # A data directory with no appliance in it: nothing may go through the local socket.
        return {"BALANCER_URL": self.url, "BALANCER_API_KEY": key, "BALANCER_DIR": "/nowhere",
                **more}  # fmt: skip

    def key(self, owner: str, name: str = "remote") -> str:
        made = balancer(self.box, "key", "create", name, "--owner", owner)
        assert made.returncode == 0, made.stderr
        return made.stdout.strip()


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Remote]:
    root = tmp_path_factory.mktemp("remote")
    with appliance(root) as box:
        certificate = root / "appliance.pem"
        pem = box.certificate(certificate)
        digest = hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest().upper()
        fingerprint = ":".join(re.findall("..", digest))
        yield Remote(box, f"https://{WEBUI_HOST}:{box.https_port}", certificate, fingerprint)


def one_line_error(run: subprocess.CompletedProcess[str], code: int = 1) -> str:
    assert run.returncode == code, (run.stdout, run.stderr)
    assert len(run.stderr.splitlines()) == 1, run.stderr
    assert run.stderr.startswith("error: ")
    return run.stderr.strip()


def test_a_key_runs_the_commands_from_elsewhere_and_its_owner_is_audited(
    remote: Remote, tmp_path: Path
) -> None:
    box = remote.box
    added = balancer(
        box, "user", "add", "ops", "--password-stdin", stdin="the remote one's password\n"
    )
    assert added.returncode == 0, added.stderr
    # The fingerprint as `openssl x509 -fingerprint -sha256` prints it on the appliance.
    openssl = f"sha256 Fingerprint={remote.fingerprint}"
    env = remote.env(remote.key("ops"), BALANCER_FINGERPRINT=openssl)

    status = balancer(box, "status", env=env)
    assert status.returncode == 0, status.stderr
    # The same System Overview, but for the time on its first line.
    assert status.stdout.splitlines()[1:] == balancer(box, "status").stdout.splitlines()[1:]
    assert "engine builtin pid" in status.stdout

    port = str(free_port([VIP]))
    made = balancer(box, "vip", "add", "Remote-Web", "--ip", VIP, "--ports", port, env=env)
    assert re.fullmatch(r"saved as revision (\d+) \(commit to apply\)\n", made.stdout), made.stderr
    revision = made.stdout.split()[3]
    committed = balancer(box, "commit", env=env)
    assert committed.stdout == f"revision {revision} is running\n", committed.stderr
    assert box.client.get("/changes")["applied"] == int(revision)

    audited = [(e["action"], e["target"]) for e in box.client.get("/audit", author="ops")]
    assert audited[:2] == [("commit", ""), ("add", "Remote-Web")]

    # The certificate's file instead of its fingerprint, the key in a file instead of the
    # environment: the same appliance, the same answer.
    key_file = tmp_path / "ops.key"
    key_file.write_text(env["BALANCER_API_KEY"] + "\n")
    env = {"BALANCER_URL": remote.url, "BALANCER_DIR": "/nowhere"}
    listed = balancer(
        box, "--ca-file", str(remote.certificate), "--key-file", str(key_file), "vip", "list",
        env=env,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.startswith("Remote-Web ")


def test_a_certificate_not_trusted_is_refused_before_the_key_is_sent(
    remote: Remote, tmp_path: Path
) -> None:
    box = remote.box
    env = remote.env(remote.key("loadbalancer"))
    before = box.client.get("/audit", limit=1)

    # Not told how to trust it: the command says what the appliance showed, for the operator
    # to compare with the appliance's own.
    untrusted = one_line_error(balancer(box, "status", env=env))
    assert untrusted == (
        f"error: the certificate of the appliance at {remote.url} is not trusted "
        f"(self-signed certificate); its SHA-256 fingerprint is {remote.fingerprint}: if that "
        "is the appliance's own, give it as --fingerprint, or its certificate as --ca-file"
    )
    wrong = "AB:" * 31 + "AB"
    # A change the appliance would take and audit, had the request reached it.
    add = ("vip", "add", "Pinned", "--ip", VIP, "--ports", str(free_port([VIP])))
    pinned = one_line_error(balancer(box, "--fingerprint", wrong, *add, env=env))
    assert pinned == (
        f"error: the appliance at {remote.url} showed a certificate with SHA-256 fingerprint "
        f"{remote.fingerprint}, not the one given: refused, the API key was not sent"
    )
    other = certificates.certificate(tmp_path / "other.pem", WEBUI_HOST)
    trusted_other = balancer(box, "--ca-file", str(other), *add, env=env)
    assert "not the one given: refused" in one_line_error(trusted_other)
    assert box.client.get("/audit", limit=1) == before  # nothing reached the appliance

    # Trusting anything works, and says what it risks.
    insecure = balancer(box, "--insecure", "status", env=env)
    assert insecure.returncode == 0
    assert insecure.stderr.startswith("warning: --insecure: the appliance's certificate is not")

    malformed = balancer(box, "--fingerprint", "AB:CD", "status", env=env)
    assert one_line_error(malformed, 2).startswith(
        "error: --fingerprint 'AB:CD': must be a SHA-256"
    )
    both = balancer(box, "--insecure", "--fingerprint", wrong, "status", env=env)
    assert "give one of them" in one_line_error(both, 2)


def test_a_revoked_key_or_a_removed_owner_is_refused_in_one_line(remote: Remote) -> None:
    box = remote.box
    env = remote.env(
        remote.key("loadbalancer", "to revoke"), BALANCER_FINGERPRINT=remote.fingerprint
    )
    assert balancer(box, "status", env=env).returncode == 0
    key_id = box.client.get("/api-keys")[-1]["id"]
    assert balancer(box, "key", "revoke", str(key_id)).returncode == 0
    refused = one_line_error(balancer(box, "status", env=env))
    assert refused == (
        f"error: the appliance at {remote.url} refused the API key: it is wrong, or was revoked, "
        "or its owner removed (HTTP 401)"
    )

    balancer(box, "user", "add", "leaver", "--password-stdin", stdin="soon gone, this password\n")
    env = remote.env(remote.key("leaver"), BALANCER_FINGERPRINT=remote.fingerprint)
    assert balancer(box, "user", "list", env=env).returncode == 0
    assert balancer(box, "user", "remove", "leaver").returncode == 0
    assert "refused the API key" in one_line_error(balancer(box, "user", "list", env=env))


def test_a_change_based_on_a_stale_revision_is_refused(remote: Remote) -> None:
    box = remote.box
    env = remote.env(remote.key("loadbalancer"), BALANCER_FINGERPRINT=remote.fingerprint)
    head = box.client.get("/changes")["head"]
    port = str(free_port([VIP]))
    made = balancer(
        box, "--if-match", str(head), "vip", "add", "Stale", "--ip", VIP, "--ports", port, env=env
    )
    assert made.stdout == f"saved as revision {head + 1} (commit to apply)\n", made.stderr
    stale = balancer(box, "--if-match", str(head), "vip", "remove", "Stale", env=env)
    assert one_line_error(stale) == (
        f"error: revision: revision {head} is no longer the newest: "
        f"revision {head + 1} was saved since"
    )
    assert box.client.get("/changes")["head"] == head + 1
    assert balancer(box, "vip", "remove", "Stale").returncode == 0


def test_an_unreachable_or_misnamed_appliance_is_one_line(remote: Remote, tmp_path: Path) -> None:
    box = remote.box
    nobody = f"https://{WEBUI_HOST}:{free_port([WEBUI_HOST])}"
    env = {**remote.env("blb_anything"), "BALANCER_URL": nobody}
    unreachable = one_line_error(balancer(box, "status", env=env))
    assert unreachable.startswith(f"error: cannot reach the appliance at {nobody} (")
    assert unreachable.endswith("): is it up, and are --url and its port right?")

    plain = balancer(box, "--url", f"http://{WEBUI_HOST}:9080", "status", env=env)
    assert "must be https://host[:port]" in one_line_error(plain, 2)
    keyless = balancer(box, "status", env={**env, "BALANCER_API_KEY": ""})
    assert one_line_error(keyless, 2) == (
        f"error: --url {nobody}: needs an API key, in $BALANCER_API_KEY or --key-file"
    )
    here_only = balancer(
        box, "init", "--password-stdin", stdin="a new password\n",
        env={**env, "BALANCER_DIR": str(tmp_path)},
    )  # fmt: skip
    assert one_line_error(here_only, 2) == (
        f"error: init acts on this machine only, not on the appliance at {nobody}"
    )


def test_a_certificate_signed_by_an_authority_in_the_ca_file_must_name_the_host(
    tmp_path: Path,
) -> None:
    ca_key, ca = issue("Test CA", None, None)
    with appliance(tmp_path) as box:
        key = balancer(box, "key", "create", "ca-test", "--owner", "loadbalancer").stdout.strip()
        ca_file = tmp_path / "ca.pem"
        ca_file.write_bytes(ca.public_bytes(Encoding.PEM))
        url = f"https://{WEBUI_HOST}:{box.https_port}"
        env = {"BALANCER_URL": url, "BALANCER_API_KEY": key, "BALANCER_CA_FILE": str(ca_file)}
        for name, works in ((x509.IPAddress(ip_address(WEBUI_HOST)), True),
                            (x509.DNSName("elsewhere.example"), False)):  # fmt: skip
            # An operator's own certificate replaces the self-signed one, from the next start.
            box.client.post("/shutdown")
            box.process.wait(15)
            own_key, own = issue("appliance", name, (ca_key, ca))
            (box.data_dir / "webui.pem").write_bytes(
                own_key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
                + own.public_bytes(Encoding.PEM)
            )
            box.start()
            status = balancer(box, "status", env=env)
            if works:
                assert status.returncode == 0, status.stderr
            else:
                mismatch = "(IP address mismatch, certificate is not valid for '127.0.0.1'.)"
                assert f"is not trusted {mismatch}" in one_line_error(status)


def issue(
    subject: str,
    name: x509.GeneralName | None,
    issuer: tuple[ec.EllipticCurvePrivateKey, x509.Certificate] | None,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A key and a certificate: an authority's if ``issuer`` is None, else one for ``name``
    that ``issuer`` signed."""
    key = ec.generate_private_key(ec.SECP256R1())
    named = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    signer_key, signer_name = (key, named) if issuer is None else (issuer[0], issuer[1].subject)
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(named)
        .issuer_name(signer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer_key.public_key()),
            critical=False,
        )
    )
    if name is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName([name]), critical=False)
    return key, builder.sign(signer_key, hashes.SHA256())
