"""The pair's link over real sockets: two nodes' management applications served by uvicorn on
the front's HTTPS listeners at 127.0.0.1 (the Primary) and 127.0.0.2 (the Secondary), each with
the WebUI's self-signed certificate and the pair's trust made by balancer.ha.trust.

The peer, showing its pair certificate and asking for PAIR_SNI, reaches /api/v1/peer/ and
nothing else; a browser sees the WebUI as before; anything else is refused there. Link hears the
peer, and its link grows once the peer stops answering."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

import httpx
import pytest

from balancer import certificates, users
from balancer.app import create_app
from balancer.controller import Controller
from balancer.front.listeners import Listener, PairTLS, listener, network_socket
from balancer.ha import trust
from balancer.model import NodeSettings, Pair
from balancer.pair.cluster import Cluster
from balancer.pair.link import STATUS, Link, Peer, PeerError
from balancer.store import Store
from tests.ha.test_trust import NOW, pair_node
from tests.webapp import PASSWORD, Clock, FakeEngine

PRIMARY = IPv4Address("127.0.0.1")
SECONDARY = IPv4Address("127.0.0.2")
ELSEWHERE = IPv4Address("127.0.0.3")
TIMEOUT = 10.0  # a bound on waiting, not a measure
STEP = 0.01


@dataclass
class Node:
    address: IPv4Address
    port: int
    pair: PairTLS
    trust: trust.Trust
    store: Store
    server: Listener
    serving: asyncio.Task[None]
    webui: Path  # the WebUI's certificate

    async def stop(self) -> None:
        self.server.should_exit = True
        await self.serving

    @property
    def url(self) -> str:
        return f"https://{self.address}:{self.port}"


@dataclass
class Trusts:
    primary: trust.Trust
    secondary: trust.Trust
    elsewhere: trust.Trust  # the pair's authority's, of an address that is neither node's
    stranger: trust.Trust  # the Primary's address, of another pair's authority


@pytest.fixture
def trusts(tmp_path: Path) -> Trusts:
    authority = trust.make_ca(now=NOW)
    return Trusts(
        primary=pair_node(tmp_path / "primary", authority, PRIMARY),
        secondary=pair_node(tmp_path / "secondary", authority, SECONDARY),
        elsewhere=pair_node(tmp_path / "elsewhere", authority, ELSEWHERE),
        stranger=pair_node(tmp_path / "stranger", trust.make_ca(now=NOW), PRIMARY),
    )


async def until(done: Callable[[], bool]) -> None:
    for _ in range(int(TIMEOUT / STEP)):
        if done():
            return
        await asyncio.sleep(STEP)
    raise AssertionError("not done in time")


@contextlib.asynccontextmanager
async def node(
    data_dir: Path, address: IPv4Address, own: trust.Trust, peer: IPv4Address, role: str
) -> AsyncIterator[Node]:
    """A node's management application on its HTTPS listener at ``address``, paired with
    ``peer``, as the daemon serves it."""
    data_dir.mkdir(parents=True, exist_ok=True)
    sock = network_socket(address, 0)
    port = sock.getsockname()[1]
    with Store(data_dir / "balancer.db") as store:
        users.add_user(store, "loadbalancer", PASSWORD, author="test")
        pair = Pair(role=role, local_address=address, peer_address=peer)
        store.save_node_settings(NodeSettings(pair=pair), author="test")
        controller = Controller(store, FakeEngine())
        tls = PairTLS()
        app = create_app(
            store,
            controller,
            Cluster(store, controller, data_dir),
            data_dir,
            lambda _: None,
            pair_tls=tls,
        )
        webui = certificates.certificate(data_dir / "webui.pem", f"node {address}")
        server = listener(app, webui)
        server.config.load()
        assert server.config.ssl is not None
        tls.serve_on(server.config.ssl)
        tls.set(own, peer)
        serving = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
        try:
            await until(lambda: server.started)
            yield Node(address, port, tls, own, store, server, serving, webui)
        finally:
            server.should_exit = True
            await serving
            sock.close()


@contextlib.asynccontextmanager
async def nodes(root: Path, trusts: Trusts) -> AsyncIterator[tuple[Node, Node]]:
    async with (
        node(root / "primary", PRIMARY, trusts.primary, SECONDARY, "primary") as primary,
        node(root / "secondary", SECONDARY, trusts.secondary, PRIMARY, "secondary") as secondary,
    ):
        yield primary, secondary


def client(certificate: trust.Trust | None = None) -> httpx.AsyncClient:
    """A client taking any server, showing ``certificate`` if given."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if certificate is not None:
        context.load_cert_chain(certificate.certificate_file, certificate.key_file)
    return httpx.AsyncClient(verify=context, trust_env=False, timeout=TIMEOUT)


PAIR = {"sni_hostname": trust.PAIR_SNI}


def test_each_node_hears_the_other_over_mutual_tls(tmp_path: Path, trusts: Trusts) -> None:
    async def scenario() -> None:
        async with nodes(tmp_path, trusts) as (primary, secondary):
            to_secondary = Peer(trusts.primary, SECONDARY, secondary.port)
            to_primary = Peer(trusts.secondary, PRIMARY, primary.port)
            try:
                heard = await to_secondary.status()
                assert (heard.address, heard.role) == (str(SECONDARY), "secondary")
                heard = await to_primary.status()
                assert (heard.address, heard.role, heard.sync) == (str(PRIMARY), "primary", "owner")
            finally:
                await to_secondary.aclose()
                await to_primary.aclose()

    asyncio.run(scenario())


def test_a_browser_sees_the_webui_as_before(tmp_path: Path, trusts: Trusts) -> None:
    async def scenario() -> None:
        async with nodes(tmp_path, trusts) as (_, secondary):
            shown = await asyncio.to_thread(
                ssl.get_server_certificate, (str(SECONDARY), secondary.port), timeout=TIMEOUT
            )
            webui = certificates.describe(secondary.webui.read_bytes()).fingerprint
            assert certificates.fingerprint(ssl.PEM_cert_to_DER_cert(shown)) == webui
            async with client() as browser:
                assert (await browser.get(f"{secondary.url}/lbadmin/sign-in")).status_code == 200
                page = await browser.get(f"{secondary.url}/lbadmin/", follow_redirects=False)
                assert page.status_code == 303  # to sign in
                assert (await browser.get(f"{secondary.url}/api/v1/users")).status_code == 401

    asyncio.run(scenario())


def test_only_the_peer_with_its_pair_certificate_reaches_the_peer_routes(
    tmp_path: Path, trusts: Trusts
) -> None:
    async def scenario() -> None:
        async with nodes(tmp_path, trusts) as (primary, secondary):
            status = f"{secondary.url}{STATUS}"
            # Keys are made on the Primary: a Secondary's users and keys are read-only.
            _, key = users.add_api_key(primary.store, "ops", "loadbalancer", author="test")
            bearer = {"Authorization": f"Bearer {key}"}
            async with client() as anonymous:
                for extensions in ({}, PAIR):
                    answer = await anonymous.get(status, extensions=extensions)
                    assert answer.status_code == 403, extensions
                    assert answer.json()["detail"][0]["field"] == "certificate"
                with_key = await anonymous.get(f"{primary.url}{STATUS}", headers=bearer)
                assert with_key.status_code == 403
                assert (
                    await anonymous.get(f"{primary.url}/api/v1/users", headers=bearer)
                ).status_code == 200  # the key is good, elsewhere
            # Another pair's certificate fails the handshake against the pair's authority.
            async with client(trusts.stranger) as stranger:
                for extensions in ({}, PAIR):
                    with pytest.raises(httpx.TransportError):
                        await stranger.get(status, extensions=extensions)
            # The pair's certificate, of an address other than the peer's.
            elsewhere = Peer(trusts.elsewhere, SECONDARY, secondary.port)
            with pytest.raises(PeerError, match=f"refused GET {STATUS}: 403 only this node's"):
                await elsewhere.status()
            await elsewhere.aclose()
            # The peer's own certificate opens nothing but the peer routes.
            peer = Peer(trusts.primary, SECONDARY, secondary.port)
            try:
                with pytest.raises(PeerError, match="refused GET /api/v1/users: 401"):
                    await peer.call("GET", "/api/v1/users")
                assert (await peer.status()).address == str(SECONDARY)
            finally:
                await peer.aclose()

    asyncio.run(scenario())


def test_a_server_other_than_the_peer_is_refused_by_the_client(
    tmp_path: Path, trusts: Trusts
) -> None:
    async def scenario() -> None:
        # At the Secondary's address, a node showing the pair's certificate of the Primary's.
        async with node(tmp_path, SECONDARY, trusts.primary, PRIMARY, "secondary") as impostor:
            wrong = Peer(trusts.primary, SECONDARY, impostor.port)
            with pytest.raises(
                PeerError, match=r"certificate of 127\.0\.0\.1, not of 127\.0\.0\.2"
            ):
                await wrong.status()
            await wrong.aclose()
            # Standalone, it shows the WebUI's, which the pair's authority did not sign.
            impostor.pair.set(None, None)
            alone = Peer(trusts.primary, SECONDARY, impostor.port)
            with pytest.raises(PeerError, match="certificate verify failed"):
                await alone.status()
            await alone.aclose()

    asyncio.run(scenario())


def test_pairing_and_breaking_reach_the_listener_without_a_restart(
    tmp_path: Path, trusts: Trusts
) -> None:
    async def scenario() -> None:
        async with nodes(tmp_path, trusts) as (_, secondary):
            peer = Peer(trusts.primary, SECONDARY, secondary.port)
            try:
                await peer.status()
                # Broken off: the listener shows only its WebUI certificate (and a connection
                # already open would get 403).
                secondary.pair.set(None, None)
                with pytest.raises(PeerError, match=r"403|certificate verify failed"):
                    await peer.status()
                secondary.pair.set(trusts.secondary, PRIMARY)
                assert (await peer.status()).address == str(SECONDARY)
            finally:
                await peer.aclose()
            # A pair made anew, with a new authority: the old pair's certificate opens nothing.
            authority = trust.make_ca(now=NOW)
            again = pair_node(tmp_path / "again" / "secondary", authority, SECONDARY)
            secondary.pair.set(again, PRIMARY)
            old = dataclasses.replace(trusts.primary, authority=authority.certificate)
            stale = Peer(old, SECONDARY, secondary.port)
            with pytest.raises(PeerError, match=r"cannot reach|403"):
                await stale.status()
            await stale.aclose()
            fresh = Peer(
                pair_node(tmp_path / "again" / "primary", authority, PRIMARY),
                SECONDARY,
                secondary.port,
            )
            assert (await fresh.status()).address == str(SECONDARY)
            await fresh.aclose()

    asyncio.run(scenario())


def test_the_link_grows_once_the_peer_stops_answering(tmp_path: Path, trusts: Trusts) -> None:
    async def scenario() -> None:
        clock = Clock()
        async with contextlib.AsyncExitStack() as running:
            secondary = await running.enter_async_context(
                node(tmp_path / "secondary", SECONDARY, trusts.secondary, PRIMARY, "secondary")
            )
            peer = Peer(trusts.primary, SECONDARY, secondary.port)
            running.push_async_callback(peer.aclose)
            link = Link(peer, interval=STEP, clock=clock)
            assert link.link() is None  # never heard
            link.start()
            try:
                await until(lambda: link.view is not None)
            finally:
                await link.stop()
            assert link.view is not None
            assert link.view.address == str(SECONDARY)
            assert (link.link(), link.error) == (0, None)
            clock.now += 1
            assert link.link() == 1
            await secondary.stop()
            clock.now += 2
            await link.ask()
            assert link.link() == 3
            assert link.view.address == str(SECONDARY)  # what it said last
            assert link.error is not None
            assert link.error.startswith(f"cannot reach the peer at {SECONDARY}:{secondary.port}: ")
            assert "\n" not in link.error

    asyncio.run(scenario())
