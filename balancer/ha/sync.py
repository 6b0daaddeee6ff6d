"""Configuration and user sync in an HA pair: what the Primary sends, what the Secondary keeps.

The Primary owns the cluster configuration and the users. Its side is ``Sync``, one per kind
(the configuration's revisions, the users' snapshots), moved on by ``apply(sync, event, now)``
as h11 moves a connection: the events are the Primary's commits and the Secondary's answers,
the action returned is what to put on the wire next. Nothing here touches a socket, a file or
the clock: the wiring loads the revision named by ``Send`` from its store, carries the messages
below over the pair's mutual TLS, and feeds back what comes.

One revision is on its way at a time and the Secondary answers each, so the numbers it holds
are the Primary's and a timeout says which one went unanswered. A Secondary that was away is
first asked where it stands (``Ask``, answered by ``Heads``) and then sent each revision it
lacks, oldest first (at most ``HISTORY`` of them), so its history is the Primary's; it runs
only the last, the Primary's applied one. Users travel as a whole snapshot, so only the newest
is sent.

The Secondary's side is ``judge`` (keep a revision, already have it, or refuse it) and the
rules of ``refuse_edit`` and ``act``: the cluster configuration is read-only there, and drain,
halt and online go to the Primary, whose revision then reaches both nodes.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import types
from dataclasses import dataclass, fields, is_dataclass, replace
from enum import StrEnum
from typing import Any, Union, get_args, get_origin, get_type_hints

from balancer import roles
from balancer.model import Pair, RealServerState

# The Secondary records a revision and reloads its engine before it answers; HAProxy at 1,000
# services takes seconds to reload, so the Primary waits longer than that before it calls the
# Secondary silent.
TIMEOUT = 10.0
# After silence or an unreachable Secondary, the Primary asks again this much later.
RETRY = 2.0
# A Secondary further behind is sent only this many of the newest revisions: each is the whole
# configuration (1,000 services x 10: 1.6 MB, and 0.4-0.6 s to check and record on the
# Secondary), and the older ones would be history it never runs. Its history then has a gap.
HISTORY = 20
_DIGEST = re.compile(r"^[0-9a-f]{64}$")


class MessageError(ValueError):
    """A message between the nodes is not as this module writes it; one line naming the field."""


class Kind(StrEnum):
    CONFIGURATION = "configuration"
    USERS = "users"


class Role(StrEnum):
    PRIMARY = "Primary"
    SECONDARY = "Secondary"


def _noun(kind: Kind) -> str:
    return "revision" if kind is Kind.CONFIGURATION else "users version"


@dataclass(frozen=True, slots=True)
class Mark:
    """A revision, or a users snapshot, as both nodes name it: its number and its digest."""

    number: int
    digest: str

    def __post_init__(self) -> None:
        if self.number < 0:
            raise MessageError(f"number: {self.number} must be 0 or more")
        if not _DIGEST.match(self.digest):
            raise MessageError("digest: must be a SHA-256 digest, 64 lower-case hex digits")

    def __str__(self) -> str:
        return f"{self.number} ({self.digest[:12]})"


# The users' snapshot: what the guide's pairing copies, kept in step ever after.


@dataclass(frozen=True, slots=True)
class UserRecord:
    name: str
    hash: str  # argon2id, as the store keeps it: never a password
    created: float
    changed: float
    role: roles.Role = roles.Role.ADMINISTRATOR
    # Two-factor sign-in (balancer.totp): the TOTP secret ('' for none), so that the Secondary
    # asks for the same codes, and the digests of the recovery codes not used yet.
    totp: str = ""
    recovery: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class KeyRecord:
    id: int
    name: str
    owner: str
    digest: str  # SHA-256 of the key, as the store keeps it: never the key
    created: float
    revoked: float | None
    role: roles.Role | None = None  # the owner's


@dataclass(frozen=True, slots=True)
class Users:
    """Every user, password hash and API key, numbered by ``version``.

    The version must grow with every change and survive a restart of the Primary: the id of the
    newest audit entry of a user or key change does both."""

    version: int
    users: tuple[UserRecord, ...]
    keys: tuple[KeyRecord, ...]

    @property
    def digest(self) -> str:
        document = {"users": _encode(self.users), "keys": _encode(self.keys)}
        text = json.dumps(document, sort_keys=True, separators=(",", ":"), allow_nan=False)
        return hashlib.sha256(text.encode()).hexdigest()

    @property
    def mark(self) -> Mark:
        return Mark(self.version, self.digest)


# Messages between the nodes. Each has a JSON form (``to_json``, ``from_json``).


@dataclass(frozen=True, slots=True)
class Heads:
    """Secondary -> Primary, when asked: what it holds (None: no users since pairing) and which
    revision its data plane runs."""

    configuration: Mark
    running: int | None
    users: Mark | None


@dataclass(frozen=True, slots=True)
class RevisionCopy:
    """Primary -> Secondary: one revision, to record under the Primary's number; ``apply`` on
    the Primary's applied revision only, the ones on the way to it are history."""

    mark: Mark
    author: str
    message: str
    created: float
    config: dict[str, Any]
    apply: bool


@dataclass(frozen=True, slots=True)
class UsersCopy:
    """Primary -> Secondary: the users' snapshot, and the digest it had when sent."""

    mark: Mark
    users: Users

    def __post_init__(self) -> None:
        if self.users.mark != self.mark:
            raise MessageError(f"mark: the snapshot is {self.users.mark}, not {self.mark} as sent")


@dataclass(frozen=True, slots=True)
class Acknowledgement:
    """Secondary -> Primary: it holds ``mark`` (and runs it, if ``applied``), since ``at``."""

    kind: Kind
    mark: Mark
    applied: bool
    at: float


@dataclass(frozen=True, slots=True)
class Refusal:
    """Secondary -> Primary: it did not keep or run ``number``, and why, in one line."""

    kind: Kind
    number: int
    reason: str
    at: float


@dataclass(frozen=True, slots=True)
class Action:
    """Secondary -> Primary: drain, halt or online asked on the Secondary, done by the Primary."""

    action: RealServerState
    service: str
    server: str
    author: str


@dataclass(frozen=True, slots=True)
class StepUsed:
    """A TOTP step whose code signed ``user`` in: no code of it, or of an earlier one, again."""

    user: str
    step: int

    def __post_init__(self) -> None:
        if self.step < 0:
            raise MessageError(f"step: {self.step} must be 0 or more")


@dataclass(frozen=True, slots=True)
class RecoveryUsed:
    """A recovery code of ``user``'s, by its digest, used on the Secondary."""

    user: str
    digest: str

    def __post_init__(self) -> None:
        if not _DIGEST.match(self.digest):
            raise MessageError("digest: must be a SHA-256 digest, 64 lower-case hex digits")


@dataclass(frozen=True, slots=True)
class SecondFactorsUsed:
    """Either node -> the other: what signed users in on it that the other must refuse too
    (balancer.pair.two_factor): the newest steps still of use, and on a Secondary the recovery
    codes it used, which only the Primary may strike from the users."""

    steps: tuple[StepUsed, ...]
    recovery: tuple[RecoveryUsed, ...]


Message = Heads | RevisionCopy | UsersCopy | Acknowledgement | Refusal | Action | SecondFactorsUsed
TYPES: dict[str, type[Message]] = {
    "heads": Heads,
    "revision": RevisionCopy,
    "users": UsersCopy,
    "acknowledgement": Acknowledgement,
    "refusal": Refusal,
    "action": Action,
    "second_factors_used": SecondFactorsUsed,
}
_NAMES = {cls: name for name, cls in TYPES.items()}


def to_json(message: Message) -> dict[str, Any]:
    encoded: dict[str, Any] = _encode(message)
    return {"type": _NAMES[type(message)], **encoded}


def from_json(data: Any) -> Message:
    """The message in ``data`` (a parsed JSON object), every field checked; MessageError names
    the first field that is wrong, as ``revision.mark.digest: ...``."""
    if not isinstance(data, dict):
        raise MessageError("message: must be a JSON object")
    name = data.get("type")
    if name not in TYPES:
        known = ", ".join(TYPES)
        raise MessageError(f"type: {name!r} is no message between the nodes ({known})")
    message: Message = _record(TYPES[name], {k: v for k, v in data.items() if k != "type"}, name)
    return message


def _encode(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _encode(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, tuple):
        return [_encode(item) for item in value]
    if isinstance(value, StrEnum):
        return value.value
    return value  # the configuration's JSON is passed as it is: it is checked where it is kept


def _record(cls: type[Any], value: Any, path: str) -> Any:
    if not isinstance(value, dict):
        raise MessageError(f"{path}: must be a JSON object")
    hints = get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    unknown = sorted(str(key) for key in value.keys() - set(names))
    if unknown:
        raise MessageError(f"{path}.{unknown[0]}: is no field of this message")
    found = {}
    for name in names:
        if name not in value:
            raise MessageError(f"{path}.{name}: is missing")
        found[name] = _value(hints[name], value[name], f"{path}.{name}")
    try:
        return cls(**found)
    except MessageError as error:  # __post_init__ names the field within the record
        raise MessageError(f"{path}.{error}") from None


def _value(hint: Any, value: Any, path: str) -> Any:
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        options = [option for option in get_args(hint) if option is not type(None)]
        return None if value is None else _value(options[0], value, path)
    if origin is tuple:
        if not isinstance(value, list):
            raise MessageError(f"{path}: must be a list")
        return tuple(
            _value(get_args(hint)[0], item, f"{path}[{n}]") for n, item in enumerate(value)
        )
    if origin is dict:
        if not isinstance(value, dict):
            raise MessageError(f"{path}: must be a JSON object")
        return value
    if isinstance(hint, type) and issubclass(hint, StrEnum):
        if value not in {member.value for member in hint}:
            allowed = ", ".join(member.value for member in hint)
            raise MessageError(f"{path}: {value!r} is not one of {allowed}")
        return hint(value)
    if isinstance(hint, type) and is_dataclass(hint):
        return _record(hint, value, path)
    if hint is float:
        if type(value) not in (int, float) or not math.isfinite(value):
            raise MessageError(f"{path}: must be a number")
        return float(value)
    # bool is an int to Python and not to JSON: types are compared exactly.
    if type(value) is not hint:
        raise MessageError(f"{path}: must be {_WORDS[hint]}")
    return value


_WORDS = {int: "a whole number", str: "a string", bool: "true or false"}


# The Primary's side.


@dataclass(frozen=True, slots=True)
class Committed:
    """The Primary applied ``mark`` (configuration), or its users changed to ``mark``."""

    mark: Mark


@dataclass(frozen=True, slots=True)
class Heard:
    """The Secondary's ``Heads`` for this kind: what it holds and whether it runs it."""

    held: Mark | None
    running: bool


@dataclass(frozen=True, slots=True)
class Unreachable:
    """The Secondary could not be connected to, or the connection broke; ``reason`` says how."""

    reason: str


@dataclass(frozen=True, slots=True)
class Tick:
    """Time passed: a send unanswered for ``timeout`` becomes silence."""


Event = Committed | Heard | Acknowledgement | Refusal | Unreachable | Tick


@dataclass(frozen=True, slots=True)
class Ask:
    """Ask the Secondary for its ``Heads``."""


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``number`` (a ``RevisionCopy`` from the store, or the users' snapshot), with
    ``apply`` set as given."""

    kind: Kind
    number: int
    apply: bool


@dataclass(frozen=True, slots=True)
class Waiting:
    number: int | None  # None: the Secondary was asked where it stands
    apply: bool
    since: float


class State(StrEnum):
    UNKNOWN = "unknown"
    IN_SYNC = "in sync"
    BEHIND = "behind"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Status:
    """What System Overview and ``balancer ha status`` show for one kind, since ``since``."""

    kind: Kind
    state: State
    behind: int | None  # revisions; None for users
    reason: str | None
    since: float

    def __str__(self) -> str:
        if self.state is State.BEHIND:
            return "behind" if self.behind is None else f"behind by {self.behind}"
        if self.state is State.FAILED:
            return f"failed: {self.reason}"
        if self.state is State.UNKNOWN:
            return "unknown: the Secondary has not answered yet"
        return str(self.state)


@dataclass(frozen=True, slots=True)
class Sync:
    """The Primary's view of one kind: its ``target`` and, once ``heard``, what the Secondary
    holds (None: nothing), with the time the Secondary gave for it. What it holds is not known
    at start, nor after silence."""

    kind: Kind
    target: Mark
    heard: bool = False
    held: Mark | None = None
    running: bool = False
    held_at: float | None = None
    waiting: Waiting | None = None
    failure: str | None = None
    retry_at: float | None = None  # when to ask again, after silence
    since: float = 0.0
    timeout: float = TIMEOUT
    retry: float = RETRY
    history: int = HISTORY


def start(kind: Kind, target: Mark, now: float) -> tuple[Sync, Ask]:
    """A new sync (at start, or when pairing completes): it begins by asking the Secondary."""
    return Sync(kind, target, waiting=Waiting(None, False, now), since=now), Ask()


def apply(sync: Sync, event: Event, now: float) -> tuple[Sync, Ask | Send | None]:
    """The sync after ``event``, and what to send next. ValueError for an event that cannot
    happen: an applied revision going back, or an answer about the other kind."""
    before = status(sync)
    after = _step(sync, event, now)
    action = _next(after)
    if isinstance(action, Send):
        after = replace(after, waiting=Waiting(action.number, action.apply, now))
    elif isinstance(action, Ask):
        after = replace(after, waiting=Waiting(None, False, now))
    changed = status(after)
    # A new state, or a new reason, begins anew; "behind" by another count does not.
    if (changed.state, changed.reason) != (before.state, before.reason):
        after = replace(after, since=now)
    return after, action


def _step(sync: Sync, event: Event, now: float) -> Sync:
    noun = _noun(sync.kind)
    match event:
        case Committed(mark):
            if mark.number < sync.target.number or (
                mark.number == sync.target.number and mark != sync.target
            ):
                raise ValueError(f"{noun} {mark} does not follow {sync.target}")
            # A refusal was of an older one; the new one is worth trying. Silence is not over.
            return replace(sync, target=mark, failure=sync.failure if not sync.heard else None)
        case Heard(held, running):
            return replace(
                sync,
                heard=True,
                held=held,
                running=running,
                waiting=None,
                failure=None,
                retry_at=None,
            )
        case Acknowledgement() | Refusal() if event.kind is not sync.kind:
            raise ValueError(f"an answer about {event.kind} given to the {sync.kind} sync")
        case Acknowledgement(_, mark, applied, at):
            waiting = sync.waiting
            if waiting is None or waiting.number != mark.number:
                return sync  # late, for a send given up on: Heads will say where it stands
            failure = None
            if waiting.apply and not applied:
                failure = f"the Secondary keeps {noun} {mark.number} but did not apply it"
            return replace(
                sync, held=mark, running=applied, held_at=at, waiting=None, failure=failure
            )
        case Refusal(_, number, reason):
            if sync.waiting is None or sync.waiting.number != number:
                return sync
            # Not tried again until something changes: it would be refused again.
            failure = f"the Secondary refused {noun} {number}: {reason}"
            return replace(sync, waiting=None, failure=failure)
        case Unreachable(reason):
            return _lost(sync, f"cannot reach the Secondary: {reason}", now)
        case Tick():
            waiting = sync.waiting
            if waiting is None:
                # After silence, ask again when the pause is over.
                due = sync.retry_at is not None and now >= sync.retry_at
                return replace(sync, retry_at=None) if due else sync
            if now - waiting.since < sync.timeout:
                return sync
            what = "where it stands" if waiting.number is None else f"{noun} {waiting.number}"
            return _lost(sync, f"the Secondary did not answer {what} in {sync.timeout:g} s", now)
    raise AssertionError(event)  # mypy sees every kind of event above


def _lost(sync: Sync, failure: str, now: float) -> Sync:
    """What the Secondary holds is no longer known; ask it again ``retry`` s from now."""
    return replace(
        sync, heard=False, held=None, waiting=None, failure=failure, retry_at=now + sync.retry
    )


def _next(sync: Sync) -> Ask | Send | None:
    if sync.waiting is not None:
        return None
    if not sync.heard:
        return Ask() if sync.retry_at is None else None
    if sync.failure is not None or _conflict(sync) is not None:
        return None
    held, target = sync.held, sync.target
    if held == target:
        return None if sync.running else Send(sync.kind, target.number, True)
    # The history in order, for revisions; a snapshot replaces every older one.
    if sync.kind is Kind.CONFIGURATION and held is not None:
        number = max(held.number + 1, target.number - sync.history + 1)
    else:
        number = target.number
    return Send(sync.kind, number, number == target.number)


def deadline(sync: Sync) -> float | None:
    """When ``Tick`` will next do something (None: only an answer or a commit will): for the
    wiring's timer."""
    if sync.waiting is not None:
        return sync.waiting.since + sync.timeout
    return sync.retry_at


def _conflict(sync: Sync) -> str | None:
    """Why the Secondary cannot take the Primary's revisions as they are, if it cannot."""
    held, target, noun = sync.held, sync.target, _noun(sync.kind)
    if held is None:
        return None
    if held.number > target.number:
        return (
            f"the Secondary holds {noun} {held.number}, newer than the Primary's "
            f"{target.number}: it was changed apart from the pair"
        )
    if held.number == target.number and held.digest != target.digest:
        return (
            f"the Secondary's {noun} {held.number} has digest {held.digest[:12]}, not the "
            f"Primary's {target.digest[:12]}"
        )
    return None


def status(sync: Sync) -> Status:
    def made(state: State, behind: int | None = None, reason: str | None = None) -> Status:
        return Status(sync.kind, state, behind, reason, sync.since)

    failure = sync.failure or _conflict(sync)
    if failure is not None:
        return made(State.FAILED, reason=failure)
    if not sync.heard:
        return made(State.UNKNOWN)
    if sync.held == sync.target and sync.running:
        return made(State.IN_SYNC)
    if sync.kind is Kind.USERS:
        return made(State.BEHIND)  # versions count changes, which say nothing to an operator
    # Holding nothing is being behind by every number from 0.
    held = sync.held.number if sync.held is not None else -1
    return made(State.BEHIND, behind=sync.target.number - held)


@dataclass(frozen=True, slots=True)
class Answer:
    """A commit's answer about the Secondary: it applied ``revision`` (with ``digest``, at
    ``at``, by its clock), or not, and ``reason`` says plainly why."""

    revision: int
    applied: bool
    digest: str | None = None
    at: float | None = None
    reason: str | None = None

    def __str__(self) -> str:
        if self.applied:
            return f"the Secondary applied revision {self.revision} ({self.digest})"
        return f"the Secondary has not applied revision {self.revision}: {self.reason}"


def answer(sync: Sync, revision: int) -> Answer:
    """Whether the Secondary applied ``revision``, for the answer of the commit that made it."""
    held = sync.held
    if held is not None and held.number == revision and sync.running and _conflict(sync) is None:
        return Answer(revision, True, held.digest, sync.held_at)
    failure = sync.failure or _conflict(sync)
    if failure is not None:
        reason = failure
    elif held is not None and held.number > revision:
        reason = f"it runs revision {held.number}, made since"
    elif sync.waiting is not None:
        reason = "it has not answered yet"
    else:
        reason = "it has not been sent it yet"
    return Answer(revision, False, reason=reason)


# The Secondary's side.


class Verdict(StrEnum):
    ACCEPT = "accept"  # newer than anything here: record it
    ALREADY = "already"  # here with the same digest: answer, and apply it if asked
    REFUSE = "refuse"


def judge(kind: Kind, sent: Mark, head: Mark | None, held: str | None) -> tuple[Verdict, str]:
    """What the Secondary does with ``sent``, given its newest (``head``; None when it holds
    none) and the digest of its own ``sent.number``, if it has one; the reason, for a refusal."""
    noun = _noun(kind)
    if held == sent.digest:
        return Verdict.ALREADY, ""
    if held is not None:
        return Verdict.REFUSE, (
            f"{noun} {sent.number} here has digest {held[:12]}, not {sent.digest[:12]} as sent"
        )
    if head is None or sent.number > head.number:
        return Verdict.ACCEPT, ""
    return Verdict.REFUSE, f"{noun} {sent.number} is not newer than {head.number}, the newest here"


class Scope(StrEnum):
    CLUSTER = "cluster"  # the configuration, users and API keys: replicated, the Primary's
    NODE = "node"  # node settings (the guide's 14.1.1): each node's own


def refuse_edit(role: Role | None, scope: Scope, primary: str) -> str | None:
    """The one line that refuses an edit on this node (None: allowed). ``role`` None is a
    standalone node; ``primary`` is where the Primary's WebUI and API answer."""
    if role is Role.SECONDARY and scope is Scope.CLUSTER:
        return (
            "this node is the Secondary of an HA pair: its cluster configuration is read-only; "
            f"make the change on the Primary at {primary}"
        )
    return None


def role_of(pair: Pair | None) -> Role | None:
    """This node's role, by its pair settings; None for a standalone node."""
    return None if pair is None else Role(pair.role.title())


def peer_at(pair: Pair) -> str:
    """Where the peer's WebUI and API answer, as ``refuse_edit`` names the Primary."""
    host = pair.peer_address
    return f"https://{f'[{host}]' if host.version == 6 else host}:{pair.peer_port}"


class Route(StrEnum):
    HERE = "here"  # done here; on the Primary, sync carries the revision to the Secondary
    PRIMARY = "primary"  # sent to the Primary as an Action; its revision comes back by sync


def act(role: Role | None) -> Route:
    """Where drain, halt and online asked on this node are done, so that they act on both."""
    return Route.PRIMARY if role is Role.SECONDARY else Route.HERE
