"""Pairing two nodes (the guide's 14.1.2) and breaking the pair: the pure checks and plans.

The Primary's *Add new node* (WebUI, API, ``balancer ha pair``) asks the peer one question at a
time, in the order of ``CHECKS``: ``decide`` says which to ask next, or that pairing proceeds,
must ask the operator before replacing the peer's services, or is refused with one line. The
certificate comes first, so the password goes only to the peer the operator confirmed, and every
refusal comes before anything is changed on either node. ``steps`` is what the page shows as it
happens, from "Attempting to pair…" to the pair.

``break_pair`` plans *Break Clustered Pair*: each node keeps the configuration and users it has
and becomes standalone; the floating IPs stay on one node only, and both forget the pair's
certificates.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass
from enum import StrEnum

from balancer import defaults
from balancer.certificates import parse_fingerprint
from balancer.ha import trust
from balancer.ha.role import State
from balancer.ha.sync import Role


class Check(StrEnum):
    FINGERPRINT = "fingerprint"  # the certificate the peer's WebUI shows (trust.peer_fingerprint)
    PASSWORD = "password"  # sign in to the peer as its loadbalancer user
    VERSION = "version"  # the peer's Balancer version
    PORTS = "ports"  # the ports between the nodes, each way
    SERVICES = "services"  # the labels of the peer's own virtual services


CHECKS = tuple(Check)


class Problem(StrEnum):
    UNREACHABLE = "peer unreachable"
    FINGERPRINT = "fingerprint mismatch"
    PASSWORD = "wrong password"
    VERSION = "version differs"
    NOT_EMPTY = "peer not empty"


@dataclass(frozen=True, slots=True)
class Request:
    """What the operator gave: this node's address, the peer's, the port its WebUI answers on,
    and the fingerprint of its certificate as the peer's ``balancer serve`` printed it."""

    local: str
    peer: str
    fingerprint: str
    version: str  # this node's Balancer
    port: int = defaults.HTTPS_PORT

    def __post_init__(self) -> None:
        for name in ("local", "peer"):
            try:
                ipaddress.ip_address(getattr(self, name))
            except ValueError:
                raise ValueError(f"{name}: {getattr(self, name)!r} is not an IP address") from None
        if ipaddress.ip_address(self.local) == ipaddress.ip_address(self.peer):
            raise ValueError(f"peer: {self.peer} is this node's own address")
        try:
            parse_fingerprint(self.fingerprint)
        except ValueError as error:
            raise ValueError(f"fingerprint: {error}") from None

    @property
    def where(self) -> str:
        host = f"[{self.peer}]" if ":" in self.peer else self.peer
        return f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Unreachable:
    """The peer did not answer a question; ``reason`` is how the connection failed."""

    reason: str


@dataclass(frozen=True, slots=True)
class Throttled:
    """The peer checks no password for ``wait`` seconds, after failed ones (as its sign-in)."""

    wait: float


@dataclass(frozen=True, slots=True)
class Port:
    """One port between the nodes, tried one way: ``reason`` None when it answered."""

    number: int
    what: str  # e.g. "sync, from the peer to this node"
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Answers:
    """What the peer answered so far, one field per check (None: not asked yet), and the
    operator's answer about replacing the peer's services (None: not asked)."""

    fingerprint: str | Unreachable | None = None  # as the peer showed it
    password: bool | Throttled | Unreachable | None = None  # True: signed in
    version: str | Unreachable | None = None
    ports: tuple[Port, ...] | Unreachable | None = None
    services: tuple[str, ...] | Unreachable | None = None
    replace: bool | None = None
    # Why the peer cannot become this node's Secondary whatever the operator says (it is in a
    # pair already, or holds revisions under numbers this node's would take), with the services.
    unfit: str | None = None


@dataclass(frozen=True, slots=True)
class Ask:
    """Ask the peer ``check`` and record its answer in ``Answers``."""

    check: Check


@dataclass(frozen=True, slots=True)
class Confirm:
    """Ask the operator ``question``; their answer is ``Answers.replace``."""

    question: str


@dataclass(frozen=True, slots=True)
class Refuse:
    """Pairing is refused, nothing was changed on either node; ``message`` is the one line,
    the problem first."""

    problem: Problem
    message: str


@dataclass(frozen=True, slots=True)
class Proceed:
    """Every check passed: make the pair (``STAGES``)."""


Decision = Ask | Confirm | Refuse | Proceed


class Progress(StrEnum):
    RUNNING = "running"
    DONE = "done"
    WAITING = "waiting"  # for the operator
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Step:
    text: str
    progress: Progress


class Stage(StrEnum):
    """What pairing does once every check passed, in order (the guide's "configuring")."""

    AUTHORITY = "Making the pair's certificate authority"
    CERTIFICATES = "Signing each node's certificate"
    SECONDARY = "Making the peer the Secondary"
    SYNC = "Sending the configuration and users to the Secondary"
    KEEPALIVED = "Starting keepalived on both nodes"


STAGES = tuple(Stage)
ATTEMPTING = "Attempting to pair…"
_ASKING = {
    Check.FINGERPRINT: "Checking the peer's certificate…",
    Check.PASSWORD: f"Signing in to the peer as {defaults.USER}…",
    Check.VERSION: "Comparing Balancer's versions…",
    Check.PORTS: "Checking the ports between the nodes…",
    Check.SERVICES: "Looking for services of the peer's own…",
}


def decide(request: Request, answers: Answers) -> Decision:
    return _walk(request, answers)[0]


def steps(
    request: Request,
    answers: Answers,
    done: tuple[Stage, ...] = (),
    failure: str | None = None,
) -> tuple[Step, ...]:
    """The steps so far: the checks, then, once they passed, the stages ``done`` and the one
    running (or failed, with ``failure``); last, the pair."""
    decision, found = _walk(request, answers)
    if not isinstance(decision, Proceed):
        first = Progress.FAILED if isinstance(decision, Refuse) else Progress.RUNNING
        return (Step(ATTEMPTING, first), *found)
    for stage in STAGES:
        if stage in done:
            found.append(Step(stage, Progress.DONE))
            continue
        if failure is not None:
            found.append(Step(f"{stage}: {failure}", Progress.FAILED))
            return (Step(ATTEMPTING, Progress.FAILED), *found)
        found.append(Step(f"{stage}…", Progress.RUNNING))
        return (Step(ATTEMPTING, Progress.RUNNING), *found)
    paired = f"Paired: Primary {request.local}, Secondary {request.peer}"
    return (Step(ATTEMPTING, Progress.DONE), *found, Step(paired, Progress.DONE))


def _walk(request: Request, answers: Answers) -> tuple[Decision, list[Step]]:
    """The decision, and a step for each check answered up to it."""
    found: list[Step] = []
    for check in CHECKS:
        answer = getattr(answers, check.value)
        if answer is None:
            found.append(Step(_ASKING[check], Progress.RUNNING))
            return Ask(check), found
        if isinstance(answer, Unreachable):
            refusal = Refuse(
                Problem.UNREACHABLE,
                f"cannot reach the peer at {request.where} ({answer.reason}): is Balancer "
                "serving there, and is the port open between the nodes?",
            )
        elif isinstance(answer, Throttled):
            refusal = Refuse(
                Problem.PASSWORD,
                f"the peer at {request.where} checks no password for {math.ceil(answer.wait)} s "
                "after failed ones: try again then; nothing was changed",
            )
        else:
            verdict = _judge(request, answers, check)
            if isinstance(verdict, str):
                found.append(Step(verdict, Progress.DONE))
                continue
            if isinstance(verdict, Confirm):
                found.append(Step(verdict.question, Progress.WAITING))
                return verdict, found
            refusal = verdict
        # The problem first, in the words: "wrong password: the peer at ...".
        refusal = Refuse(refusal.problem, f"{refusal.problem}: {refusal.message}")
        found.append(Step(refusal.message, Progress.FAILED))
        return refusal, found
    return Proceed(), found


def _judge(request: Request, answers: Answers, check: Check) -> str | Confirm | Refuse:
    """One answered check: the step's text when it passed, else what to do."""
    peer = f"the peer at {request.where}"
    match check:
        case Check.FINGERPRINT:
            confirmed = parse_fingerprint(request.fingerprint)
            if answers.fingerprint == confirmed:
                return f"Reached {request.where}: its certificate is the one confirmed"
            return Refuse(
                Problem.FINGERPRINT,
                f"{peer} showed a certificate with SHA-256 fingerprint {answers.fingerprint}, "
                f"not the one confirmed ({confirmed}): refused, its password was not sent",
            )
        case Check.PASSWORD:
            if answers.password:
                return f"Signed in to the peer as {defaults.USER}"
            return Refuse(
                Problem.PASSWORD,
                f"{peer} refused the password of its {defaults.USER} user: nothing was changed",
            )
        case Check.VERSION:
            if answers.version == request.version:
                return f"Both nodes run Balancer {request.version}"
            return Refuse(
                Problem.VERSION,
                f"{peer} runs Balancer {answers.version} and this node {request.version}: "
                "both nodes of a pair run the same version; update one and pair again",
            )
        case Check.PORTS:
            assert isinstance(answers.ports, tuple)
            closed = next((port for port in answers.ports if port.reason is not None), None)
            if closed is None:
                open_ = ", ".join(f"{port.number} ({port.what})" for port in answers.ports)
                return f"Ports open between the nodes: {open_}"
            return Refuse(
                Problem.UNREACHABLE,
                f"port {closed.number} ({closed.what}) did not answer ({closed.reason}): open it "
                "between the nodes and pair again",
            )
        case Check.SERVICES:
            assert isinstance(answers.services, tuple)
            if answers.unfit is not None:
                return Refuse(Problem.NOT_EMPTY, f"{peer} {answers.unfit}: nothing was changed")
            labels = answers.services
            if not labels:
                return "The peer has no services of its own"
            listed = ", ".join(labels[:5]) + (f" and {len(labels) - 5} more" if labels[5:] else "")
            if answers.replace:
                return f"The peer's {_services(len(labels))} will be replaced by this node's"
            if answers.replace is None:
                return Confirm(
                    f"{peer} has {_services(len(labels))} of its own ({listed}): pairing "
                    "replaces them with this node's configuration. Replace them?"
                )
            return Refuse(
                Problem.NOT_EMPTY,
                f"{peer} has {_services(len(labels))} of its own ({listed}) and they were kept: "
                "nothing was changed",
            )
    raise AssertionError(check)


def _services(count: int) -> str:
    return f"{count} service" + ("" if count == 1 else "s")


# Break Clustered Pair.


@dataclass(frozen=True, slots=True)
class Node:
    """One node as it is when the pair breaks; ``state`` None when it cannot be reached."""

    address: str
    role: Role
    state: State | None


@dataclass(frozen=True, slots=True)
class Leave:
    """What one node does when the pair breaks. It keeps its configuration and its users, as
    they are, and becomes standalone: cluster edits are its own again."""

    address: str
    role: Role
    keeps_floating_ips: bool  # as its own addresses once keepalived stops; else released
    removes: tuple[str, ...]  # files of the pair's directory (trust.DIRECTORY)
    reachable: bool

    def __str__(self) -> str:
        keeps = "its configuration and users" + (
            " and the floating IPs" if self.keeps_floating_ips else ""
        )
        line = (
            f"{self.address} ({self.role}) keeps {keeps}; it gives up "
            f"{'' if self.keeps_floating_ips else 'the floating IPs, '}the pair's certificates "
            "and its peer, and stands alone"
        )
        if not self.reachable:
            line += ": it cannot be reached now, so break the pair on it too when it can"
        return line


def break_pair(primary: Node, secondary: Node) -> tuple[Leave, Leave]:
    """The plan for each node (Primary first). The floating IPs stay where traffic is, on the
    Active node; when that is not one node alone (neither, or both in a split brain) the
    Primary keeps them."""
    active = [node for node in (primary, secondary) if node.state is State.ACTIVE]
    keeper = active[0] if len(active) == 1 else primary
    node_files = (trust.NODE_FILE, trust.NODE_KEY_FILE, trust.CA_FILE)
    return (
        Leave(
            primary.address,
            Role.PRIMARY,
            keeper is primary,
            (*node_files, trust.CA_KEY_FILE),
            primary.state is not None,
        ),
        Leave(
            secondary.address,
            Role.SECONDARY,
            keeper is secondary,
            node_files,
            secondary.state is not None,
        ),
    )
