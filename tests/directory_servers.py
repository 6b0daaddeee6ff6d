"""Real directory servers for the directory sign-in tests: Debian's slapd and freeradius, each
started from a temporary directory of the test's own, on loopback, on ports that were free.

slapd holds an Active Directory-like tree (sAMAccountName and userPrincipalName from a small
schema of ours) with users, groups and a nested group; it answers LDAP (and StartTLS) on one
port and LDAPS on another, with a server certificate issued by a test CA made here. freeradius
has one client, 127.0.0.1 with a shared secret that must send Message-Authenticator, and users
in its files module, some with a Filter-Id or a Class in their Access-Accept.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.appliance import free_port, wait_for

BASE_DN = "dc=example,dc=test"
READER_DN = f"cn=reader,ou=services,{BASE_DN}"
READER_PASSWORD = "reader's password"
RADIUS_SECRET = "the shared secret of 127.0.0.1"
# name: (password, groups it is a direct member of)
USERS = {
    "alice": ("alice's password", ("balancer-admins",)),
    "bob": ("bob's password", ("helpdesk",)),  # helpdesk is a member of balancer-operators
    "carol": ("carol's password", ("accounting",)),
}
# group: the groups it is a member of
GROUPS = {
    "balancer-admins": (),
    "balancer-operators": (),
    "helpdesk": ("balancer-operators",),
    "accounting": (),
}
# RADIUS users: name: (password, reply attributes)
RADIUS_USERS = {
    "alice": ("alice's password", {"Filter-Id": "balancer-admins"}),
    "bob": ("bob's password", {"Class": "operators"}),
    "carol": ("carol's password", {}),
}

# An Active Directory user's two names, as slapd cannot have them without a schema.
AD_SCHEMA = """\
attributetype ( 1.2.840.113556.1.4.221 NAME 'sAMAccountName'
    EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch
    SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.4.656 NAME 'userPrincipalName'
    EQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
objectclass ( 1.3.6.1.4.1.4203.666.11.1 NAME 'testAccount' AUXILIARY
    MAY ( sAMAccountName $ userPrincipalName ) )
"""


@dataclass(frozen=True)
class Authority:
    """A certificate authority of the test's own."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode()

    def issue(self, directory: Path, name: str) -> tuple[Path, Path]:
        """A server certificate for 127.0.0.1 and localhost, written with its key."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
        cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return cert_path, key_path


def authority(name: str) -> Authority:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return Authority(certificate, key)


@dataclass(frozen=True)
class Slapd:
    ldap_port: int  # LDAP and StartTLS
    ldaps_port: int
    ca: Authority  # issued the server's certificate
    pid: int


@dataclass(frozen=True)
class Radius:
    port: int
    pid: int


def _ldif() -> str:
    entries = [
        f"dn: {BASE_DN}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example",
        f"dn: ou=people,{BASE_DN}\nobjectClass: organizationalUnit\nou: people",
        f"dn: ou=groups,{BASE_DN}\nobjectClass: organizationalUnit\nou: groups",
        f"dn: ou=services,{BASE_DN}\nobjectClass: organizationalUnit\nou: services",
        f"dn: {READER_DN}\nobjectClass: person\ncn: reader\nsn: reader\n"
        f"userPassword: {READER_PASSWORD}",
    ]
    members: dict[str, list[str]] = {group: [] for group in GROUPS}
    for name, (password, groups) in USERS.items():
        dn = f"uid={name},ou=people,{BASE_DN}"
        entries.append(
            f"dn: {dn}\nobjectClass: inetOrgPerson\nobjectClass: testAccount\nuid: {name}\n"
            f"cn: {name}\nsn: {name}\nsAMAccountName: {name}\n"
            f"userPrincipalName: {name}@example.test\nuserPassword: {password}"
        )
        for group in groups:
            members[group].append(dn)
    for group, parents in GROUPS.items():
        for parent in parents:
            members[parent].append(f"cn={group},ou=groups,{BASE_DN}")
    for group, dns in members.items():
        # groupOfNames must have a member: the reader stands in for an empty group.
        listed = "".join(f"\nmember: {dn}" for dn in dns or [READER_DN])
        entries.append(
            f"dn: cn={group},ou=groups,{BASE_DN}\nobjectClass: groupOfNames\ncn: {group}{listed}"
        )
    return "\n\n".join(entries) + "\n"


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def _answers(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        return True


@contextlib.contextmanager
def slapd(root: Path) -> Iterator[Slapd]:
    """slapd on loopback with the test's tree; stopped (by its PID) when done."""
    root.mkdir(parents=True)
    ca = authority("Balancer test directory CA")
    cert, key = ca.issue(root, "slapd")
    (root / "ad.schema").write_text(AD_SCHEMA)
    (root / "db").mkdir()
    conf = root / "slapd.conf"
    conf.write_text(
        "include /etc/ldap/schema/core.schema\n"
        "include /etc/ldap/schema/cosine.schema\n"
        "include /etc/ldap/schema/inetorgperson.schema\n"
        f"include {root}/ad.schema\n"
        f"pidfile {root}/slapd.pid\n"
        "modulepath /usr/lib/ldap\n"
        "moduleload back_mdb\n"
        f"TLSCertificateFile {cert}\n"
        f"TLSCertificateKeyFile {key}\n"
        "database mdb\n"
        f'suffix "{BASE_DN}"\n'
        f'rootdn "cn=admin,{BASE_DN}"\n'
        f"directory {root}/db\n"
        "maxsize 10485760\n"
        "access to attrs=userPassword by anonymous auth by * none\n"
        "access to * by users read by * none\n"
    )
    (root / "tree.ldif").write_text(_ldif())
    subprocess.run(
        ["slapadd", "-q", "-f", str(conf), "-l", str(root / "tree.ldif")],
        check=True,
        capture_output=True,
    )
    ldap_port, ldaps_port = free_port(["127.0.0.1"]), free_port(["127.0.0.1"])
    urls = f"ldap://127.0.0.1:{ldap_port}/ ldaps://127.0.0.1:{ldaps_port}/"
    log = (root / "slapd.log").open("wb")
    # -d 0: in the foreground, so that this process is slapd and is stopped by its PID.
    process = subprocess.Popen(
        ["slapd", "-f", str(conf), "-h", urls, "-d", "0"], stdout=log, stderr=log
    )
    try:
        wait_for(
            "slapd", lambda: process.poll() is None and _answers(ldap_port) and _answers(ldaps_port)
        )
        yield Slapd(ldap_port, ldaps_port, ca, process.pid)
    finally:
        _stop(process)
        log.close()


@contextlib.contextmanager
def freeradius(root: Path) -> Iterator[Radius]:
    """freeradius on loopback (UDP) with the test's users; stopped (by its PID) when done."""
    root.mkdir(parents=True)
    port = free_port(["127.0.0.1"])
    users = []
    for name, (password, reply) in RADIUS_USERS.items():
        said = "".join(f',\n    {attribute} := "{value}"' for attribute, value in reply.items())
        users.append(
            f'{name} Cleartext-Password := "{password}"\n    Message-Authenticator := 0x00{said}'
        )
    (root / "users").write_text("\n\n".join(users) + "\n")
    (root / "radiusd.conf").write_text(
        f"""prefix = /usr
exec_prefix = /usr
sysconfdir = /etc
localstatedir = /var
sbindir = /usr/sbin
logdir = {root}
raddbdir = {root}
radacctdir = {root}
name = freeradius
confdir = {root}
run_dir = {root}
libdir = /usr/lib/freeradius
max_request_time = 5
cleanup_delay = 0
max_requests = 256
hostname_lookups = no
log {{
    destination = stdout
    auth = yes
}}
security {{
    allow_core_dumps = no
    max_attributes = 200
    reject_delay = 0
    status_server = no
}}
client loopback {{
    ipaddr = 127.0.0.1
    secret = "{RADIUS_SECRET}"
    require_message_authenticator = yes
}}
modules {{
    files {{
        filename = {root}/users
    }}
    pap {{
        normalise = yes
    }}
}}
server default {{
    listen {{
        type = auth
        ipaddr = 127.0.0.1
        port = {port}
    }}
    authorize {{
        files
        pap
    }}
    authenticate {{
        Auth-Type PAP {{
            pap
        }}
    }}
}}
"""
    )
    (root / "dictionary").write_text("")
    log = (root / "radiusd.out").open("wb")
    # -f: in the foreground, so that this process is freeradius and is stopped by its PID.
    process = subprocess.Popen(
        ["freeradius", "-f", "-d", str(root), "-l", "stdout"], stdout=log, stderr=log
    )
    try:
        wait_for(
            "freeradius",
            lambda: (
                process.poll() is None
                and b"Ready to process requests" in (root / "radiusd.out").read_bytes()
            ),
        )
        yield Radius(port, process.pid)
    finally:
        _stop(process)
        log.close()


def wait_down(port: int) -> None:
    """Until nothing answers on ``port``: a server the test stopped is gone."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            _answers(port)
        except OSError:
            return
        time.sleep(0.05)
    raise AssertionError(f"something still answers on port {port}")
