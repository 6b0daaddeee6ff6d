"""Trust between the nodes of a pair: real TLS over loopback sockets between a Primary at
127.0.0.1 and a Secondary at 127.0.0.2, the fingerprint check against a WebUI's certificate,
the checks of requests and certificates, and the files."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import ssl
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address, ip_address
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from balancer import certificates
from balancer.ha import trust
from balancer.ha.trust import Trust, TrustError
from balancer.model.types import IPAddress

PRIMARY = IPv4Address("127.0.0.1")
SECONDARY = IPv4Address("127.0.0.2")
TIMEOUT = 10.0  # a bound on each socket operation, not a measure
NOW = datetime.now(UTC)


def pair_node(data_dir: Path, authority: trust.Authority, address: IPAddress | str) -> Trust:
    """One node's side of pairing: its key stays in ``data_dir``; only the request and the
    certificates travel, as PEM, as they would between the nodes. The files are where pairing
    leaves them (``trust.directory(data_dir)``)."""
    address = ip_address(address)
    pair_dir = trust.directory(data_dir)
    key, request = trust.make_key_and_csr(address)
    trust.save_key(pair_dir, key)
    sent = request.public_bytes(serialization.Encoding.PEM)
    signed = trust.sign_csr(authority, x509.load_pem_x509_csr(sent), address, now=NOW)
    trust.save_certificate(pair_dir, signed, authority.certificate, address, now=NOW)
    return trust.load(pair_dir, address, now=NOW)


@dataclass
class Pair:
    primary: Trust
    secondary: Trust
    stranger: Trust  # the Primary's address, from another pair's authority
    root: Path


@pytest.fixture
def pair(tmp_path: Path) -> Pair:
    authority = trust.make_ca(now=NOW)
    trust.save_authority(trust.directory(tmp_path / "primary"), authority)
    return Pair(
        primary=pair_node(tmp_path / "primary", authority, PRIMARY),
        secondary=pair_node(tmp_path / "secondary", authority, SECONDARY),
        stranger=pair_node(tmp_path / "stranger", trust.make_ca(now=NOW), PRIMARY),
        root=tmp_path,
    )


@dataclass
class Served:
    """What the server side of one connection saw."""

    received: bytes | None = None
    version: str | None = None
    client_names: list[str] = field(default_factory=list)
    error: OSError | None = None


def exchange(
    server: ssl.SSLContext, client: ssl.SSLContext, host: IPv4Address
) -> tuple[bytes | OSError, Served]:
    """One connection to a server at ``host``: the client sends b"ping", the server answers
    b"pong " and what it got. What the client read (or its error), and what the server saw."""
    served = Served()
    listener = socket.create_server((str(host), 0))
    listener.settimeout(TIMEOUT)

    def serve() -> None:
        with listener:
            try:
                connection, _ = listener.accept()
            except OSError as error:
                served.error = error
                return
            connection.settimeout(TIMEOUT)
            try:
                with server.wrap_socket(connection, server_side=True) as tls:
                    shown = x509.load_der_x509_certificate(tls.getpeercert(True) or b"")
                    names = shown.extensions.get_extension_for_class(x509.SubjectAlternativeName)
                    served.client_names = [str(name.value) for name in names.value]
                    served.version = tls.version()
                    served.received = tls.recv(64)
                    tls.sendall(b"pong " + served.received)
            except OSError as error:
                served.error = error
            finally:
                connection.close()

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        answer: bytes | OSError
        with socket.create_connection((str(host), listener.getsockname()[1]), TIMEOUT) as raw:
            try:
                with client.wrap_socket(raw, server_hostname=str(host)) as tls:
                    tls.sendall(b"ping")
                    answer = tls.recv(64)
            except OSError as error:
                answer = error
    finally:
        thread.join(TIMEOUT)
    assert not thread.is_alive()
    return answer, served


def test_paired_nodes_exchange_bytes_over_mutual_tls_1_3(pair: Pair) -> None:
    client = trust.client_context(pair.primary, SECONDARY)
    answer, served = exchange(trust.server_context(pair.secondary), client, SECONDARY)
    assert answer == b"pong ping"
    assert served.error is None
    assert served.received == b"ping"
    assert served.version == "TLSv1.3"
    assert served.client_names == [str(PRIMARY)]


def test_a_client_certified_by_another_authority_is_refused(pair: Pair) -> None:
    # It takes the Secondary for what it is, so the handshake gets as far as its certificate.
    stranger = dataclasses.replace(pair.stranger, authority=pair.secondary.authority)
    client = trust.client_context(stranger, SECONDARY)
    answer, served = exchange(trust.server_context(pair.secondary), client, SECONDARY)
    assert isinstance(served.error, ssl.SSLError)
    assert served.error.reason == "CERTIFICATE_VERIFY_FAILED"
    assert served.received is None
    assert answer != b"pong ping"


def test_a_client_without_a_certificate_is_refused(pair: Pair) -> None:
    anonymous = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    anonymous.load_verify_locations(
        cadata=pair.secondary.authority.public_bytes(serialization.Encoding.PEM).decode()
    )
    answer, served = exchange(trust.server_context(pair.secondary), anonymous, SECONDARY)
    assert isinstance(served.error, ssl.SSLError)
    assert served.error.reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE"
    assert served.received is None
    assert answer != b"pong ping"


def test_a_client_that_stops_at_tls_1_2_is_refused(pair: Pair) -> None:
    old = trust.client_context(pair.primary, SECONDARY)
    old.minimum_version = ssl.TLSVersion.TLSv1_2
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    answer, served = exchange(trust.server_context(pair.secondary), old, SECONDARY)
    assert isinstance(answer, ssl.SSLError)
    assert isinstance(served.error, ssl.SSLError)
    assert served.received is None


@pytest.mark.parametrize("server", ["another authority's", "the WebUI's", "the other node's"])
def test_a_server_without_the_pairs_certificate_of_the_peer_is_refused(
    pair: Pair, server: str
) -> None:
    if server == "another authority's":
        context, host = trust.server_context(pair.stranger), SECONDARY
    elif server == "the WebUI's":
        context = certificates.server_context(pair.root / "webui.pem", "secondary")
        host = SECONDARY
    else:
        # The pair's own certificate, of 127.0.0.1, served at 127.0.0.1 and so matching the
        # name the client connects by; the client wants its peer's, 127.0.0.2's.
        context, host = trust.server_context(pair.primary), PRIMARY
    answer, served = exchange(context, trust.client_context(pair.primary, SECONDARY), host)
    assert isinstance(answer, ssl.SSLCertVerificationError)
    # The other node's certificate is the pair's: the client refuses it once its handshake is
    # done, before sending anything.
    assert not served.received


def test_the_client_asks_for_the_pairs_listener_by_name(pair: Pair) -> None:
    asked: list[str | None] = []
    server = trust.server_context(pair.secondary)
    server.sni_callback = lambda connection, name, context: asked.append(name)
    answer, _ = exchange(server, trust.client_context(pair.primary, SECONDARY), SECONDARY)
    assert answer == b"pong ping"
    assert asked == [trust.PAIR_SNI]


async def exchange_over_asyncio(
    server: ssl.SSLContext, client: ssl.SSLContext, host: IPv4Address
) -> bytes:
    """As ``exchange``, over asyncio's streams, whose TLS goes through SSLContext.wrap_bio."""

    async def pong(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            writer.write(b"pong " + await reader.readexactly(4))
            await writer.drain()
        writer.close()

    async with (
        asyncio.timeout(TIMEOUT),
        await asyncio.start_server(pong, str(host), 0, ssl=server) as listener,
    ):
        port = listener.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection(str(host), port, ssl=client)
        try:
            writer.write(b"ping")
            return await reader.read(64)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


def test_asyncio_streams_take_the_peer_and_refuse_the_other_node(pair: Pair) -> None:
    client = trust.client_context(pair.primary, SECONDARY)
    secondary = trust.server_context(pair.secondary)
    assert asyncio.run(exchange_over_asyncio(secondary, client, SECONDARY)) == b"pong ping"
    with pytest.raises(ssl.SSLCertVerificationError):
        asyncio.run(exchange_over_asyncio(trust.server_context(pair.primary), client, PRIMARY))


class WebUI:
    """A server showing a WebUI's certificate, as `balancer serve` makes it, to ``count``
    connections."""

    def __init__(self, pem: Path, count: int) -> None:
        self.context = certificates.server_context(pem, "peer")
        self.fingerprint = certificates.describe(pem.read_bytes()).fingerprint
        self.listener = socket.create_server((str(SECONDARY), 0))
        self.listener.settimeout(TIMEOUT)
        self.port: int = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, args=(count,))
        self.thread.start()

    def _serve(self, count: int) -> None:
        with self.listener:
            for _ in range(count):
                try:
                    connection, _ = self.listener.accept()
                except OSError:
                    return
                connection.settimeout(TIMEOUT)
                # The client hangs up once it has the certificate, maybe mid-handshake.
                try:
                    self.context.wrap_socket(connection, server_side=True).close()
                except OSError:
                    connection.close()


@pytest.fixture
def webui(tmp_path: Path) -> Iterator[WebUI]:
    server = WebUI(tmp_path / "webui.pem", count=3)
    yield server
    with contextlib.suppress(OSError):  # closed already if it served them all
        server.listener.shutdown(socket.SHUT_RDWR)  # wakes its accept() if a test made fewer
    server.thread.join(TIMEOUT)
    assert not server.thread.is_alive()


def test_the_peers_fingerprint_as_serve_prints_it_is_confirmed(webui: WebUI) -> None:
    assert trust.peer_fingerprint(SECONDARY, webui.port) == webui.fingerprint
    printed = f"sha256 Fingerprint={webui.fingerprint}"  # as first_start.ready() shows it
    trust.confirm_peer(SECONDARY, webui.port, printed)
    trust.confirm_peer(SECONDARY, webui.port, webui.fingerprint.replace(":", "").lower())


def test_a_fingerprint_other_than_the_peers_is_refused(webui: WebUI) -> None:
    other = "AB:" * 31 + "AB"
    with pytest.raises(trust.WrongFingerprint) as refused:
        trust.confirm_peer(SECONDARY, webui.port, other)
    assert str(refused.value) == (
        f"the peer at 127.0.0.2:{webui.port} showed a certificate with SHA-256 fingerprint "
        f"{webui.fingerprint}, not the one confirmed ({other}): refused, its password was not sent"
    )
    assert refused.value.shown == webui.fingerprint


def test_a_fingerprint_that_is_none_is_refused_before_connecting() -> None:
    with pytest.raises(TrustError, match=r"^fingerprint 'AB:CD': must be a SHA-256 fingerprint"):
        trust.confirm_peer(SECONDARY, 9, "AB:CD")


def test_a_peer_that_does_not_answer_is_unreachable() -> None:
    with socket.socket() as closed:
        closed.bind((str(SECONDARY), 0))  # bound, never listening: connections are refused
        port = closed.getsockname()[1]
        with pytest.raises(trust.PeerUnreachable) as refused:
            trust.confirm_peer(SECONDARY, port, "AB" * 32)
    assert str(refused.value) == (
        f"cannot reach the peer at 127.0.0.2:{port} (Connection refused): is Balancer serving "
        "there, and is the port open between the nodes?"
    )


def test_a_request_for_another_address_is_refused() -> None:
    authority = trust.make_ca(now=NOW)
    _, request = trust.make_key_and_csr(IPv4Address("127.0.0.3"))
    with pytest.raises(TrustError) as refused:
        trust.sign_csr(authority, request, SECONDARY, now=NOW)
    assert str(refused.value) == (
        "the certificate request of 127.0.0.2 names 127.0.0.3, not 127.0.0.2: refused"
    )


def test_a_request_not_signed_by_its_key_is_refused() -> None:
    authority = trust.make_ca(now=NOW)
    _, request = trust.make_key_and_csr(SECONDARY)
    der = bytearray(request.public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01  # the last byte of the signature
    with pytest.raises(TrustError, match="is not signed by its own key"):
        trust.sign_csr(authority, x509.load_der_x509_csr(bytes(der)), SECONDARY, now=NOW)


def test_the_pair_certificates_are_what_the_pair_needs(pair: Pair) -> None:
    authority = pair.primary.authority
    constraints = authority.extensions.get_extension_for_class(x509.BasicConstraints)
    assert (constraints.value.ca, constraints.value.path_length) == (True, 0)
    node = pair.secondary.certificate
    usages = node.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usages) == {
        x509.oid.ExtendedKeyUsageOID.SERVER_AUTH,
        x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH,
    }
    names = node.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert list(names) == [x509.IPAddress(SECONDARY)]
    assert node.not_valid_after_utc == authority.not_valid_after_utc


def test_time_decides_when_the_pair_trusts(pair: Pair) -> None:
    node, authority = pair.secondary.certificate, pair.secondary.authority
    trust.verify(node, authority, SECONDARY, now=NOW + timedelta(days=19 * 365))
    with pytest.raises(TrustError, match=r"^the pair authority's certificate expired on "):
        trust.verify(node, authority, SECONDARY, now=NOW + timedelta(days=21 * 365))
    with pytest.raises(TrustError, match=r"certificate is not valid before .*clock right\?$"):
        trust.verify(node, authority, SECONDARY, now=NOW - timedelta(days=2))
    old = trust.make_ca(now=NOW - timedelta(days=21 * 365))
    _, request = trust.make_key_and_csr(SECONDARY)
    with pytest.raises(TrustError, match="expired on"):
        trust.sign_csr(old, request, SECONDARY, now=NOW)


def test_a_certificate_of_another_pair_or_address_is_not_the_pairs(pair: Pair) -> None:
    with pytest.raises(TrustError) as other_pair:
        trust.verify(pair.stranger.certificate, pair.primary.authority, PRIMARY, now=NOW)
    assert str(other_pair.value).startswith("the certificate of 127.0.0.1 is not the pair's: ")
    with pytest.raises(TrustError) as other_address:
        trust.verify(pair.primary.certificate, pair.primary.authority, SECONDARY, now=NOW)
    assert str(other_address.value) == (
        "the certificate of 127.0.0.2 is for 127.0.0.1: it is not the pair's"
    )


def test_keys_are_the_owners_alone_and_stay_in_the_pairs_directory(pair: Pair) -> None:
    modes = {
        path.relative_to(pair.root).as_posix(): stat.S_IMODE(path.stat().st_mode)
        for path in sorted(pair.root.rglob("*"))
        if path.name != "webui.pem"
    }
    assert modes == {
        "primary": modes["primary"],  # the data directory is the daemon's to make
        "primary/pair": 0o700,
        "primary/pair/ca-key.pem": 0o600,
        "primary/pair/ca.pem": 0o600,
        "primary/pair/node-key.pem": 0o600,
        "primary/pair/node.pem": 0o600,
        "secondary": modes["secondary"],
        "secondary/pair": 0o700,
        "secondary/pair/ca.pem": 0o600,
        "secondary/pair/node-key.pem": 0o600,
        "secondary/pair/node.pem": 0o600,
        "stranger": modes["stranger"],
        "stranger/pair": 0o700,
        "stranger/pair/ca.pem": 0o600,
        "stranger/pair/node-key.pem": 0o600,
        "stranger/pair/node.pem": 0o600,
    }
    for path in pair.root.rglob("*.pem"):
        is_key = b"PRIVATE KEY" in path.read_bytes()
        assert is_key == path.name.endswith("-key.pem"), path


def test_the_loader_says_in_one_line_which_file_is_wrong(pair: Pair) -> None:
    pair_dir = trust.directory(pair.root / "secondary")
    with pytest.raises(TrustError) as no_authority:
        trust.load_authority(pair_dir)
    assert str(no_authority.value) == (
        f"{pair_dir}/ca-key.pem: missing; this node is not paired, or its pairing did not finish"
    )
    (pair_dir / "node.pem").write_bytes(b"-----BEGIN CERTIFICATE-----\nbroken\n")
    with pytest.raises(TrustError) as damaged:
        trust.load(pair_dir, SECONDARY, now=NOW)
    assert str(damaged.value) == f"{pair_dir}/node.pem: is not a PEM certificate; it is damaged"
    (pair_dir / "node.pem").write_bytes(
        pair.secondary.certificate.public_bytes(serialization.Encoding.PEM)
    )
    (pair_dir / "node-key.pem").write_bytes(b"")
    with pytest.raises(TrustError) as no_key:
        trust.load(pair_dir, SECONDARY, now=NOW)
    assert str(no_key.value) == f"{pair_dir}/node-key.pem: is not a PEM private key; it is damaged"
    primary_dir = trust.directory(pair.root / "primary")
    (pair_dir / "node-key.pem").write_bytes((primary_dir / "node-key.pem").read_bytes())
    with pytest.raises(TrustError) as mixed:
        trust.load(pair_dir, SECONDARY, now=NOW)
    assert str(mixed.value) == f"{pair_dir}/node-key.pem: is not the key of {pair_dir}/node.pem"
    with pytest.raises(TrustError) as unsaved:
        trust.save_certificate(
            pair_dir, pair.secondary.certificate, pair.secondary.authority, SECONDARY, now=NOW
        )
    assert str(unsaved.value) == "the certificate of 127.0.0.2 is not for this node's key: refused"
