"""What happens on this node, as one stream of typed events.

The controller publishes every saved and applied revision, every operator action, and every
change of a real server's health or of the engine's state. The WebUI's live views, the logs
and the HA pair's sync subscribe to the stream rather than poll the store.

Publishing never blocks and never fails: the controller must not wait on a slow reader. Each
subscriber has a bounded queue; one that falls behind loses its oldest events and is told how
many with a ``Missed`` event, so that it can read the current state once and go on. Pure but
for asyncio's queues; time comes from the caller.

A synchronous API route runs in a worker thread: what it publishes is queued at once (a
synchronous reader, such as the controller's own, sees it on return), and the waiting readers
are woken on the event loop's thread, the only one an asyncio.Event may be set from.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from typing import Self

# A subscriber that has not read this many events is behind, not merely busy.
QUEUE = 1024


@dataclass(frozen=True, slots=True)
class RevisionSaved:
    """A new head: an edit, a restore, or an operator action's carried-over edits."""

    revision: int
    author: str
    action: str
    target: str
    at: float


@dataclass(frozen=True, slots=True)
class RevisionApplied:
    """The data plane runs ``revision`` (a commit, or an action that takes effect at once)."""

    revision: int
    author: str
    at: float


@dataclass(frozen=True, slots=True)
class OperatorAction:
    """Drain, halt or online of a real server; in effect at once, not waiting for a commit."""

    action: str
    service: str
    server: str
    author: str
    at: float


@dataclass(frozen=True, slots=True)
class CommitFailed:
    """The engine refused ``revision``; the one applied before still runs."""

    revision: int
    author: str
    error: str
    at: float


@dataclass(frozen=True, slots=True)
class HealthChanged:
    """A real server's health check says otherwise than before; ``reason`` is its verdict."""

    service: str
    server: str
    health: str
    reason: str
    at: float


@dataclass(frozen=True, slots=True)
class EngineChanged:
    """The data plane runs the applied revision again (``error`` None), or does not, and why."""

    error: str | None
    at: float


@dataclass(frozen=True, slots=True)
class RoleChanged:
    """This node of an HA pair is now ``state`` (active, passive, fault), and why: "peer
    silent for 0.6 s", "engine not answering", "operator"."""

    role: str
    state: str
    previous: str
    reason: str
    at: float


@dataclass(frozen=True, slots=True)
class SplitBrain:
    """Both nodes of the HA pair hold the floating IPs, as this node sees it (``raised``), or
    no longer do: since when (while raised), and the evidence in an operator's words."""

    raised: bool
    since: float | None
    evidence: tuple[str, ...]
    at: float


@dataclass(frozen=True, slots=True)
class Missed:
    """Only to a subscriber that fell behind: ``count`` events were dropped before this one."""

    count: int


Event = (
    RevisionSaved
    | RevisionApplied
    | CommitFailed
    | OperatorAction
    | HealthChanged
    | EngineChanged
    | RoleChanged
    | SplitBrain
)


def kind(event: Event | Missed) -> str:
    """The event's name in a log line's ``event`` field: health_changed for HealthChanged,
    split_brain_resolved for a SplitBrain that is no longer raised."""
    if isinstance(event, SplitBrain) and not event.raised:
        return "split_brain_resolved"
    return re.sub(r"(?<!^)([A-Z])", r"_\1", type(event).__name__).lower()


def fields(event: Event | Missed) -> dict[str, object]:
    return asdict(event)


def said(event: Event | Missed) -> str:
    """The event in a sentence, as a log line says it."""
    match event:
        case RevisionSaved(revision, author, action, target):
            return f"revision {revision} saved by {author}: {action} {target}".rstrip()
        case RevisionApplied(revision, author):
            return f"revision {revision} applied by {author}"
        case CommitFailed(revision, author, error):
            return f"commit of revision {revision} by {author} failed: {error}"
        case OperatorAction(action, service, server, author):
            return f"{author}: {action} real server {server} of {service}"
        case HealthChanged(service, server, health, reason):
            return f"real server {server} of {service} is {health}: {reason}"
        case EngineChanged(None):
            return "engine runs the applied revision again"
        case EngineChanged(error):
            return f"engine: {error}"
        case RoleChanged(role, state, previous, reason):
            return f"{role} node is {state} (was {previous}): {reason}"
        case SplitBrain(raised, _, evidence):
            if raised:
                return f"split brain: both nodes hold the floating IPs: {'; '.join(evidence)}"
            return "split brain resolved: one node holds the floating IPs"
        case Missed(count):
            return f"{count} events were dropped: their reader fell behind"


@dataclass(eq=False, slots=True)
class Subscription:
    """One reader's queue; iterate it (``async for``) inside ``with`` to leave the stream."""

    _stream: Stream
    _queue: deque[Event | Missed] = field(default_factory=deque)
    _missed: int = 0
    _ready: asyncio.Event = field(default_factory=asyncio.Event)

    def _put(self, event: Event) -> None:
        if len(self._queue) >= QUEUE:
            self._queue.popleft()
            self._missed += 1
        self._queue.append(event)

    async def next(self) -> Event | Missed:
        while not self._queue:
            self._ready.clear()
            await self._ready.wait()
        if self._missed:
            missed, self._missed = Missed(self._missed), 0
            return missed
        return self._queue.popleft()

    def pending(self) -> list[Event | Missed]:
        """What is queued, without waiting; empties the queue. Safe from another thread: an
        event put meanwhile is either in the answer or still queued."""
        found: list[Event | Missed] = [Missed(self._missed)] if self._missed else []
        self._missed = 0
        while self._queue:
            found.append(self._queue.popleft())
        return found

    def __aiter__(self) -> AsyncIterator[Event | Missed]:
        return self._events()

    async def _events(self) -> AsyncIterator[Event | Missed]:
        while True:
            yield await self.next()

    def close(self) -> None:
        self._stream._subscribers.discard(self)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class Stream:
    def __init__(self) -> None:
        self._subscribers: set[Subscription] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    def publish(self, event: Event) -> None:
        subscribers = list(self._subscribers)
        for subscriber in subscribers:
            subscriber._put(event)
        loop = self._loop
        if loop is not None and loop.is_running() and not _on(loop):
            loop.call_soon_threadsafe(_wake, subscribers)
        else:
            _wake(subscribers)

    def subscribe(self) -> Subscription:
        """Subscribed from inside an event loop, the queues belong to that loop's thread."""
        # Outside a loop (a synchronous reader, as tests are), events are delivered directly.
        with contextlib.suppress(RuntimeError):
            self._loop = asyncio.get_running_loop()
        subscription = Subscription(self)
        self._subscribers.add(subscription)
        return subscription


def _wake(subscribers: list[Subscription]) -> None:
    for subscriber in subscribers:
        subscriber._ready.set()


def _on(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
