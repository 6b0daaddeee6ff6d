"""Pairing two nodes and breaking the pair, over the wire: the guide's 14.1.2 *Add new node* on
the Primary (``add_node``), the joining node's side of it (``Joining``), and *Break Clustered
Pair* (``break_pair``, ``leave``). What to ask and in which order, each refusal's words and the
plan of a break are ``balancer.ha.pairing``'s; this module asks, carries and keeps.

Before any trust exists, the Primary reaches the peer's WebUI port pinned to the fingerprint the
operator confirmed (the handshake refuses any other certificate, so the password is sent to
that one only) and signs in with HTTP Basic as the peer's ``loadbalancer`` user. It asks twice:

- ``POST /api/v1/ha/join/offer``: the peer answers its version, hostname, services, newest
  revision, whether it reached this node's port back, and a certificate request for its
  address. Its key is kept in memory only: a refused pairing leaves nothing on either node.
- ``POST /api/v1/ha/join/accept``, once every check passed: the Secondary's ``Pair``, its
  signed certificate, the pair authority's, the users' snapshot and the Primary's revisions.
  The peer checks all of it, then keeps it, runs the Primary's configuration and forms its
  part of the pair.

Only then does the Primary keep its own authority, key, certificate and ``Pair``, and form its
part. From then on the nodes talk over the pair's mutual TLS only.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import ipaddress
import math
import os
import secrets
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import BaseModel, Field, ValidationError

from balancer import defaults
from balancer.certificates import parse_fingerprint
from balancer.client import WrongCertificate, pinning
from balancer.controller import Controller
from balancer.edits import Edit
from balancer.ha import pairing, sync, trust
from balancer.ha.pairing import (
    Answers,
    Confirm,
    Port,
    Problem,
    Proceed,
    Refuse,
    Request,
    Stage,
    Step,
    Throttled,
    Unreachable,
)
from balancer.ha.role import State
from balancer.model import Config, Pair
from balancer.model.types import Address, IPAddress
from balancer.pair.link import Peer, PeerError
from balancer.pair.status import PairView
from balancer.store import NotFound, Store, digest

OFFER = "/api/v1/ha/join/offer"
ACCEPT = "/api/v1/ha/join/accept"
LEAVE = "/api/v1/peer/leave"
# The peer tries this node's port back within this.
PORT_TIMEOUT = 5.0
# Waiting on the peer's answer to the offer: its own try of this node's port is in it.
OFFER_TIMEOUT = trust.CONNECT_TIMEOUT + PORT_TIMEOUT
# The peer records the revisions and has its engine run the last before it answers; HAProxy
# at 1,000 services takes seconds (as sync's TIMEOUT).
ACCEPT_TIMEOUT = 120.0
# An offer not accepted within this is forgotten, with its key.
OFFER_LIFETIME = 300.0


def version() -> str:
    """This node's Balancer version, which both nodes of a pair run."""
    return importlib.metadata.version("balancer")


class Node(Protocol):
    """What pairing needs of this node's ``balancer.pair.cluster.Cluster``."""

    store: Store
    controller: Controller
    data_dir: Path

    @property
    def pair(self) -> Pair | None: ...

    def view(self) -> PairView | None: ...

    async def form(self, pair: Pair) -> None:
        """Keep ``pair`` as this node's and start its part; the pair's files are in place."""

    async def dissolve(self, *, keep_floating_ips: bool) -> None:
        """Stop this node's part, forget the pair's files and its ``Pair``."""


class PairingError(Exception):
    """Pairing cannot start here, or the peer's messages are not pairing's; one line."""


# The messages of the handshake, as JSON bodies.


class Offer(BaseModel):
    """Primary -> peer: the peer's address as the Primary names it (its certificate's), and
    where the Primary's own port is, for the peer to try back."""

    address: Address
    primary_address: Address
    primary_port: int = Field(ge=1, le=65535)


class Head(BaseModel):
    number: int
    digest: str


class Offered(BaseModel):
    """Peer -> Primary: what the checks need, and a certificate request for its address."""

    offer: str  # names this offer in the accept
    version: str
    hostname: str
    services: list[str]
    https_port: int
    head: Head
    paired_with: str | None  # the peer's own peer, if it is in a pair already
    port_back: str | None  # why the Primary's port did not answer; None: it did
    csr: str  # PEM


class Acceptance(BaseModel):
    """Primary -> peer: become the Secondary."""

    offer: str
    pair: Pair
    certificate: str  # PEM, the peer's, signed by the pair's authority
    authority: str  # PEM
    users: dict[str, Any]  # sync.UsersCopy's JSON
    revisions: list[dict[str, Any]]  # sync.RevisionCopy's JSON, oldest first


class Accepted(BaseModel):
    """Peer -> Primary: the revision it runs now (None if the Primary has none yet)."""

    revision: int | None
    digest: str | None


class Leaving(BaseModel):
    """Either node -> the other: the pair is broken."""

    keeps_floating_ips: bool


# The Primary's side.


@dataclass(frozen=True)
class Outcome:
    """How *Add new node* ended: paired, refused (``problem``), waiting for the operator's
    answer (``question``), or failed in a stage (``failure``); ``steps`` as the page shows."""

    steps: tuple[Step, ...]
    paired: bool = False
    problem: Problem | None = None
    question: str | None = None
    failure: str | None = None

    @property
    def message(self) -> str:
        return self.steps[-1].text


Progress = Callable[[tuple[Step, ...]], None]


async def add_node(
    node: Node,
    request: Request,
    password: str,
    replace_services: bool | None,
    progress: Progress,
    *,
    author: str,
) -> Outcome:
    """Pair this node, the Primary, with the peer ``request`` names: ask the peer, check each
    answer in ``pairing.CHECKS``'s order, then make the pair on both nodes. ``progress`` is told
    the steps each time one changes. Refused or asking, nothing is changed on either node."""
    if node.pair is not None:
        raise PairingError(
            f"peer_address: this node is already the {node.pair.role} of a pair with "
            f"{node.pair.peer_address}: break that pair first"
        )
    _own_address(request.local)
    if node.data_dir in _UNDER_WAY:
        raise PairingError("peer_address: this node is pairing already: wait for it to end")
    _UNDER_WAY.add(node.data_dir)
    try:
        return await _add_node(node, request, password, replace_services, progress, author)
    finally:
        _UNDER_WAY.discard(node.data_dir)


def _own_address(address: str) -> None:
    """PairingError unless ``address`` is one of this node's: keepalived's adverts and the
    peer's connections go to it."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((address, 0))
        except OSError as error:
            raise PairingError(
                f"local_address: {address} is not an address of this node ({_strerror(error)})"
            ) from None


# The data directories of the nodes pairing now: one pairing at a time (the WebUI's and the
# API's would otherwise race to the peer's one offer).
_UNDER_WAY: set[Path] = set()


async def _add_node(
    node: Node,
    request: Request,
    password: str,
    replace_services: bool | None,
    progress: Progress,
    author: str,
) -> Outcome:
    answers = Answers(replace=replace_services)
    progress(pairing.steps(request, answers))
    primary_port = node.store.node_settings().https_port
    offer = Offer.model_validate(
        {"address": request.peer, "primary_address": request.local, "primary_port": primary_port}
    )
    target = _target(node.store)
    answer, offered = await _ask(request, password, OFFER, offer, OFFER_TIMEOUT, Offered)
    if offered is None:
        answers = replace(answers, **answer)
        progress(pairing.steps(request, answers))
    else:
        for check, value in _answers(request, offered, primary_port):
            answers = replace(answers, **{check: value})
            progress(pairing.steps(request, answers))
    decision = pairing.decide(request, answers)
    if isinstance(decision, Refuse | Confirm):
        node.store.audit(
            author=author,
            action="ha_pair_refused",
            target=request.peer,
            detail={"local": request.local, "peer": request.peer, "why": decision_text(decision)},
        )
        shown = pairing.steps(request, answers)
        if isinstance(decision, Confirm):
            return Outcome(shown, question=decision.question)
        return Outcome(shown, problem=decision.problem)
    assert isinstance(decision, Proceed)
    assert offered is not None
    return await _make_pair(node, request, password, answers, offered, target, progress, author)


def decision_text(decision: Refuse | Confirm) -> str:
    return decision.message if isinstance(decision, Refuse) else decision.question


async def _make_pair(
    node: Node,
    request: Request,
    password: str,
    answers: Answers,
    offered: Offered,
    target: sync.Mark,
    progress: Progress,
    author: str,
) -> Outcome:
    """Every check passed: the stages, the peer's first, then this node's. Until the peer has
    accepted, nothing here is kept but in memory."""
    done: list[Stage] = []

    def reached(stage: Stage) -> None:
        done.append(stage)
        progress(pairing.steps(request, answers, tuple(done)))

    def failed(reason: str) -> Outcome:
        shown = pairing.steps(request, answers, tuple(done), failure=reason)
        node.store.audit(
            author=author,
            action="ha_pair_failed",
            target=request.peer,
            detail={"local": request.local, "peer": request.peer, "why": shown[-1].text},
        )
        return Outcome(shown, failure=reason)

    now = datetime.now(UTC)
    local, peer = ipaddress.ip_address(request.local), ipaddress.ip_address(request.peer)
    authority = trust.make_ca(now=now)
    reached(Stage.AUTHORITY)
    try:
        csr = x509.load_pem_x509_csr(offered.csr.encode())
        peer_certificate = trust.sign_csr(authority, csr, peer, now=now)
    except (ValueError, trust.TrustError) as error:
        return failed(f"the peer's certificate request: {error}")
    key, own_request = trust.make_key_and_csr(local)
    own_certificate = trust.sign_csr(authority, own_request, local, now=now)
    reached(Stage.CERTIFICATES)
    settings = node.store.node_settings()
    secondary = Pair(
        role="secondary",
        local_address=peer,
        peer_address=local,
        peer_port=settings.https_port,
    )
    target = await _numbered_past(node, offered.head, target, author)
    users = node.store.users_snapshot()
    acceptance = Acceptance(
        offer=offered.offer,
        pair=secondary,
        certificate=_pem(peer_certificate),
        authority=_pem(authority.certificate),
        users=sync.to_json(sync.UsersCopy(users.mark, users)),
        revisions=[sync.to_json(copy) for copy in _copies(node.store, offered.head, target)],
    )
    answer, accepted = await _ask(request, password, ACCEPT, acceptance, ACCEPT_TIMEOUT, Accepted)
    if accepted is None:
        return failed(_unanswered(answer))
    reached(Stage.SECONDARY)
    reached(Stage.SYNC)
    pair_dir = trust.directory(node.data_dir)
    trust.save_authority(pair_dir, authority)
    trust.save_key(pair_dir, key)
    trust.save_certificate(pair_dir, own_certificate, authority.certificate, local, now=now)
    primary = Pair(role="primary", local_address=local, peer_address=peer, peer_port=request.port)
    node.store.audit(
        author=author,
        action="ha_paired",
        target=request.peer,
        detail={
            "role": "primary",
            "local": request.local,
            "peer": request.peer,
            "peer_hostname": offered.hostname,
            "revision": accepted.revision,
        },
    )
    await node.form(primary)
    reached(Stage.KEEPALIVED)
    return Outcome(pairing.steps(request, answers, tuple(done)), paired=True)


def _unanswered(answer: dict[str, Any]) -> str:
    """Why the peer did not answer the accept, as ``_ask`` found it."""
    said = answer.get("password", answer.get("fingerprint"))
    if isinstance(said, Unreachable):
        return said.reason
    if isinstance(said, str):
        return f"it showed another certificate since the checks ({said}); its password was not sent"
    if isinstance(said, Throttled):
        return f"it checks no password for {math.ceil(said.wait)} s"
    return "it refused the password it took a moment ago"


def _target(store: Store) -> sync.Mark:
    """The revision the Secondary is to run: the one this node runs, else its newest."""
    applied = store.applied()
    revision = store.revision(applied.revision) if applied is not None else store.head()
    return sync.Mark(revision.id, revision.digest)


def _answers(request: Request, offered: Offered, primary_port: int) -> list[tuple[str, Any]]:
    """The peer's answers to the offer, check by check in ``pairing.CHECKS``'s order."""
    ports = (
        Port(request.port, "management and sync, from this node to the peer"),
        Port(primary_port, "management and sync, from the peer to this node", offered.port_back),
    )
    return [
        ("fingerprint", parse_fingerprint(request.fingerprint)),
        ("password", True),
        ("version", offered.version),
        ("ports", ports),
        ("unfit", _unfit(offered)),
        ("services", tuple(offered.services)),
    ]


def _unfit(offered: Offered) -> str | None:
    if offered.paired_with is not None:
        return f"is already in a pair with {offered.paired_with}: break that pair on it first"
    return None


async def _numbered_past(node: Node, peer: Head, target: sync.Mark, author: str) -> sync.Mark:
    """The revision the Secondary is to run, under a number past the peer's own revisions.

    The Secondary keeps the Primary's revisions under the Primary's numbers, so the one it runs
    must be newer than anything it holds. When the peer's history (a peer that was used
    before) reaches as far, this node records the configuration it runs again, numbered past
    the peer's, and runs it under that number: the same configuration, so nothing moves. Saved
    changes not committed yet are recorded after it, and stay the newest."""
    if target.number > peer.number or target == sync.Mark(peer.number, peer.digest):
        return target
    store, controller = node.store, node.controller
    head = store.head()
    number = max(peer.number, head.id) + 1
    why = f"numbered past the peer's revision {peer.number} for pairing"
    again = [(store.revision(target.number), number)]
    if head.id != target.number:
        again.append((head, number + 1))
    for source, at in again:
        controller.receive(
            source.config,
            revision=at,
            digest=source.digest,
            author=author,
            message=f"revision {source.id}, {why}",
            created=time.time(),
        )
    await controller.run_received(number, author)
    return sync.Mark(number, target.digest)


def _copies(store: Store, head: Head, target: sync.Mark) -> list[sync.RevisionCopy]:
    """The revisions the peer lacks up to ``target``, oldest first, at most sync.HISTORY; the
    last is the one it runs."""
    if target.number <= head.number:
        return []
    copies = []
    for number in range(max(head.number + 1, target.number - sync.HISTORY + 1), target.number + 1):
        try:
            revision = store.revision(number)
        except NotFound:  # a gap this node's own history has, from its sync
            continue
        copies.append(
            sync.RevisionCopy(
                sync.Mark(revision.id, revision.digest),
                revision.author,
                revision.message,
                revision.created,
                revision.config.model_dump(mode="json"),
                apply=number == target.number,
            )
        )
    return copies


M = TypeVar("M", bound=BaseModel)
E = TypeVar("E", bound=BaseException)


async def _ask(
    request: Request,
    password: str,
    path: str,
    body: BaseModel,
    timeout: float,
    answer: type[M],
) -> tuple[dict[str, Any], M | None]:
    """``body`` to the peer at ``path``, over TLS pinned to the confirmed fingerprint, signed
    in as its loadbalancer user: its answer, or, when there is none, the ``Answers`` fields
    that say why (the certificate, the password, or unreachable)."""
    host = f"[{request.peer}]" if ":" in request.peer else request.peer
    url = f"https://{host}:{request.port}{path}"
    try:
        async with httpx.AsyncClient(
            verify=pinning(request.fingerprint),
            auth=httpx.BasicAuth(defaults.USER, password),
            timeout=timeout,
            trust_env=False,  # no proxy stands between the nodes
        ) as client:
            response = await client.post(url, content=body.model_dump_json(), headers=_JSON)
    except httpx.HTTPError as error:
        wrong = _cause(error, WrongCertificate)
        if wrong is not None:
            return {"fingerprint": wrong.shown}, None
        return {"fingerprint": Unreachable(_why(error))}, None
    # It answered over the handshake pinned to the confirmed certificate.
    reached = {"fingerprint": parse_fingerprint(request.fingerprint)}
    if response.status_code == 401:
        return {**reached, "password": False}, None
    if response.status_code == 429:
        wait = float(response.headers.get("retry-after", "1"))
        return {**reached, "password": Throttled(wait)}, None
    if response.status_code != 200:
        why = f"it answered {path} with {_said(response)}"
        return {**reached, "password": Unreachable(why)}, None
    try:
        return reached, answer.model_validate_json(response.content)
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        why = f"its answer to {path} is not pairing's: {field}: {first['msg']}"
        return {**reached, "password": Unreachable(why)}, None


_JSON = {"Content-Type": "application/json"}


def _said(response: httpx.Response) -> str:
    try:
        detail = response.json()["detail"]
        said = "; ".join(f"{item['field']}: {item['reason']}" for item in detail)
    except (ValueError, KeyError, TypeError):
        said = response.text.strip()[:200]
    return f"HTTP {response.status_code}" + (f" ({said})" if said else "")


def _why(error: BaseException) -> str:
    """How a connection failed, in a few words: 'connection refused', 'timed out'."""
    if isinstance(error, httpx.TimeoutException):
        return "timed out"
    seen: BaseException | None = error
    for _ in range(20):  # a chain of causes is short; this bounds a cycle
        if seen is None:
            break
        if isinstance(seen, OSError) and seen.errno:
            return _strerror(seen)
        seen = seen.__cause__ or seen.__context__
    return str(error) or type(error).__name__


def _strerror(error: OSError) -> str:
    # asyncio's own words name the address, which the refusal already does.
    return (os.strerror(error.errno) if error.errno else str(error)).lower()


def _cause(error: BaseException, kind: type[E]) -> E | None:
    seen: BaseException | None = error
    for _ in range(20):  # a chain of causes is short; this bounds a cycle
        if seen is None:
            return None
        if isinstance(seen, kind):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _pem(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


# The joining node's side.


@dataclass(frozen=True)
class _Pending:
    id: str
    key: ec.EllipticCurvePrivateKey
    address: IPAddress
    primary: IPAddress
    made: float


class Joining:
    """The side of the node that joins a pair: it answers the Primary's offer and keeps what
    the Primary sends once the operator's checks passed. One offer at a time; its key lives in
    memory until the accept, so an offer that goes nowhere leaves nothing behind. The caller
    has checked the loadbalancer user's password."""

    def __init__(self, node: Node, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.node = node
        self.clock = clock
        self._pending: _Pending | None = None

    async def offer(self, offer: Offer) -> Offered:
        store = self.node.store
        settings = store.node_settings()
        head = store.head()
        key, request = trust.make_key_and_csr(offer.address)
        pending = _Pending(
            secrets.token_urlsafe(16), key, offer.address, offer.primary_address, self.clock()
        )
        port_back = await _try_port(offer.address, offer.primary_address, offer.primary_port)
        self._pending = pending
        pair = self.node.pair
        return Offered(
            offer=pending.id,
            version=version(),
            hostname=settings.hostname,
            services=[service.label for service in head.config.virtual_services],
            https_port=settings.https_port,
            head=Head(number=head.id, digest=head.digest),
            paired_with=None if pair is None else str(pair.peer_address),
            port_back=port_back,
            csr=request.public_bytes(serialization.Encoding.PEM).decode(),
        )

    async def accept(self, acceptance: Acceptance, *, author: str) -> Accepted:
        """Check everything sent, then keep it and form this node's part as the Secondary;
        PairingError naming what is wrong, with nothing kept."""
        pending = self._pending
        if (
            pending is None
            or not secrets.compare_digest(pending.id, acceptance.offer)
            or self.clock() - pending.made > OFFER_LIFETIME
        ):
            raise PairingError("offer: no such offer here, or it is too old: pair again")
        if self.node.pair is not None:
            raise PairingError(
                f"pair: this node is already in a pair with {self.node.pair.peer_address}"
            )
        pair = acceptance.pair
        if pair.role != "secondary" or pair.local_address != pending.address:
            raise PairingError(f"pair: must make this node, {pending.address}, the Secondary")
        if pair.peer_address != pending.primary:
            raise PairingError(f"pair.peer_address: the offer came from {pending.primary}")
        now = datetime.now(UTC)
        certificate, authority = _checked_certificate(acceptance, pending, now)
        users, revisions = _checked_copies(acceptance)
        store = self.node.store
        # Checked: from here on it is kept.
        self._pending = None
        pair_dir = trust.directory(self.node.data_dir)
        trust.save_key(pair_dir, pending.key)
        trust.save_certificate(pair_dir, certificate, authority, pending.address, now=now)
        who = f"primary {pending.primary}"
        controller = self.node.controller
        own = store.head()
        try:
            for copy, config in revisions:
                controller.receive(
                    config,
                    revision=copy.mark.number,
                    digest=copy.mark.digest,
                    author=copy.author,
                    message=copy.message,
                    created=copy.created,
                )
            applied = None
            if revisions:
                applied = await controller.run_received(revisions[-1][0].mark.number, who)
        except BaseException:
            # Not joined: the pair's files go, and this node's own configuration is the newest
            # again; the Primary's revisions stay as history.
            shutil.rmtree(pair_dir, ignore_errors=True)
            if store.head().id != own.id:
                controller.save(Edit.restore(store.export(own.id)), base=None, author=who)
            raise
        # Last, as the guide says: from now on the Primary's credentials sign in here.
        store.receive_users(users, author=who)
        store.audit(
            author=author,
            action="ha_paired",
            target=str(pending.primary),
            detail={
                "role": "secondary",
                "local": str(pending.address),
                "peer": str(pending.primary),
            },
        )
        await self.node.form(pair)
        running = store.applied()
        number = applied.revision if applied else (running.revision if running else None)
        return Accepted(
            revision=number,
            digest=None if number is None else store.revision(number).digest,
        )


def _checked_certificate(
    acceptance: Acceptance, pending: _Pending, now: datetime
) -> tuple[x509.Certificate, x509.Certificate]:
    try:
        certificate = x509.load_pem_x509_certificate(acceptance.certificate.encode())
        authority = x509.load_pem_x509_certificate(acceptance.authority.encode())
    except ValueError:
        raise PairingError("certificate: is not a PEM certificate") from None
    try:
        trust.verify(certificate, authority, pending.address, now=now)
    except trust.TrustError as error:
        raise PairingError(f"certificate: {error}") from None
    ours = pending.key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    shown = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if ours != shown:
        raise PairingError("certificate: is not for the key this node made for the offer")
    return certificate, authority


def _checked_copies(
    acceptance: Acceptance,
) -> tuple[sync.Users, list[tuple[sync.RevisionCopy, Config]]]:
    try:
        users = sync.from_json(acceptance.users)
        copies = [sync.from_json(item) for item in acceptance.revisions]
    except sync.MessageError as error:
        raise PairingError(str(error)) from None
    if not isinstance(users, sync.UsersCopy) or not users.users.users:
        raise PairingError("users: must be the Primary's users, at least one")
    revisions = []
    for index, copy in enumerate(copies):
        if not isinstance(copy, sync.RevisionCopy):
            raise PairingError(f"revisions[{index}]: must be a revision")
        try:
            config = Config.model_validate(copy.config)
        except ValidationError as error:
            raise PairingError(f"revisions[{index}].config: {error.errors()[0]['msg']}") from None
        if digest(config) != copy.mark.digest:
            raise PairingError(f"revisions[{index}]: the configuration does not have its digest")
        revisions.append((copy, config))
    return users.users, revisions


async def _try_port(local: IPAddress, address: IPAddress, port: int) -> str | None:
    """Whether this node, from its own ``local`` address, reaches ``address``'s ``port``: None
    when it does, else why not."""
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(str(address), port, local_addr=(str(local), 0)),
            PORT_TIMEOUT,
        )
    except TimeoutError:
        return "timed out"
    except OSError as error:
        return _strerror(error)
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return None


# Break Clustered Pair.


async def break_pair(node: Node, *, author: str) -> tuple[pairing.Leave, pairing.Leave]:
    """Leave the pair, both nodes standalone as ``pairing.break_pair`` plans it: the peer is
    told over the pair's link (if it cannot be reached, the plan says to break it there too),
    then this node leaves. The plan, Primary first."""
    pair = node.pair
    if pair is None:
        raise PairingError("pair: this node stands alone; there is no pair to break")
    view = node.view()
    this_state = _state(view.this.state) if view is not None else None
    peer_state = _state(view.peer.state) if view is not None and view.peer is not None else None
    this = pairing.Node(str(pair.local_address), _role(pair), this_state or State.PASSIVE)
    other = pairing.Node(str(pair.peer_address), _other_role(pair), peer_state)
    primary, secondary = (this, other) if pair.role == "primary" else (other, this)
    plan = pairing.break_pair(primary, secondary)
    mine, theirs = plan if pair.role == "primary" else plan[::-1]
    leaving = Leaving(keeps_floating_ips=theirs.keeps_floating_ips)
    peer = _peer(node, pair)  # made before this node's leaving removes the pair's files
    if theirs.keeps_floating_ips:
        # The node that gives the floating IPs up leaves first: while its keepalived runs, the
        # keeper's stopping hands them to it (and the clients' ARP caches with them), and it
        # then drops them, leaving the keeper with addresses no client sends to.
        await leave(node, mine.keeps_floating_ips, author=author, detail={"peer_told": "after"})
        told = await _tell_peer(peer, leaving)
    else:
        told = await _tell_peer(peer, leaving)
        await leave(node, mine.keeps_floating_ips, author=author, detail={"peer_told": told})
    plan_told = replace(theirs, reachable=told)
    return (mine, plan_told) if pair.role == "primary" else (plan_told, mine)


async def leave(
    node: Node, keep_floating_ips: bool, *, author: str, detail: dict[str, Any] | None = None
) -> None:
    """This node's part of a break (``Node.dissolve``: the pair's work stops, its files and
    ``Pair`` go; the configuration and users stay as they are), audited."""
    pair = node.pair
    if pair is None:
        return
    await node.dissolve(keep_floating_ips=keep_floating_ips)
    node.store.audit(
        author=author,
        action="ha_pair_broken",
        target=str(pair.peer_address),
        detail={"role": pair.role, "keeps_floating_ips": keep_floating_ips, **(detail or {})},
    )


def _peer(node: Node, pair: Pair) -> Peer | None:
    """The client of the pair's mutual TLS to the peer, None if this node's files are unusable."""
    try:
        loaded = trust.load(
            trust.directory(node.data_dir), pair.local_address, now=datetime.now(UTC)
        )
    except trust.TrustError:
        return None
    return Peer(loaded, pair.peer_address, pair.peer_port)


async def _tell_peer(peer: Peer | None, leaving: Leaving) -> bool:
    """Whether the peer heard, over the pair's mutual TLS, that the pair is broken."""
    if peer is None:
        return False
    try:
        await peer.call("POST", LEAVE, leaving.model_dump(mode="json"))
    except PeerError:
        return False
    finally:
        await peer.aclose()
    return True


def _state(shown: str) -> State | None:
    return next((state for state in State if state.value.lower() == shown.lower()), None)


def _role(pair: Pair) -> sync.Role:
    return sync.Role.PRIMARY if pair.role == "primary" else sync.Role.SECONDARY


def _other_role(pair: Pair) -> sync.Role:
    return sync.Role.SECONDARY if pair.role == "primary" else sync.Role.PRIMARY
