"""Configuration and user sync at run time: the Primary keeps its Secondary in step.

``balancer.ha.sync`` is the machine; ``Syncer`` moves it, one lane per kind. The configuration's
lane follows the controller's events: each applied revision is a ``Committed``, and what the
machine says to send is loaded from the store and posted to the Secondary
(``/api/v1/peer/revisions``, balancer.api.replica). The users' lane looks at
``Store.users_version`` every second and sends the whole snapshot when it grew. Answers,
silence and an unreachable Secondary go back into the machine, which asks a Secondary that was
away where it stands and catches it up. A commit's answer (``answer``) waits a few seconds for
the Secondary to apply the revision.

On the Secondary, ``forwarding`` is how drain, halt and online reach the Primary
(``Controller.forward``): the Primary does them and answers once its Secondary applied them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import asdict
from typing import Any, Protocol

from balancer.controller import Controller, Forward, ForwardFailed
from balancer.events import Missed, RevisionApplied, Subscription
from balancer.ha import sync
from balancer.ha.sync import (
    Acknowledgement,
    Action,
    Answer,
    Ask,
    Committed,
    Heads,
    Heard,
    Kind,
    Mark,
    MessageError,
    Refusal,
    RevisionCopy,
    Send,
    State,
    Status,
    Tick,
    Unreachable,
    Users,
    UsersCopy,
)
from balancer.pair.link import PeerError
from balancer.store import Store

log = logging.getLogger(__name__)

# The routes of the receiving node (balancer.api.replica).
HEADS = "/api/v1/peer/heads"
REVISIONS = "/api/v1/peer/revisions"
USERS = "/api/v1/peer/users"
ACTIONS = "/api/v1/peer/actions"
# How often the users' version is looked at: a user added on the Primary signs in on the
# Secondary a second or so later.
USERS_POLL = 1.0
# How long a commit's answer waits for the Secondary: a reload of a large HAProxy
# configuration takes seconds, and the operator is waiting.
ANSWER_WAIT = 5.0
_PATHS = {Kind.CONFIGURATION: REVISIONS, Kind.USERS: USERS}


class Peer(Protocol):
    """The other node of the pair (``balancer.pair.link.Peer``): its JSON answer, or PeerError
    saying in one line why there is none."""

    async def call(
        self, method: str, path: str, body: Any = None, *, timeout: float | None = None
    ) -> Any: ...


class _Lane:
    """One kind's sync: the machine's state, the send it asks for next, and who waits on it."""

    def __init__(self, kind: Kind, target: Mark, now: float) -> None:
        self.sync, first = sync.start(kind, target, now)
        self.next: Ask | Send | None = first
        self._woken = asyncio.Event()  # something for the lane's task to do
        self._changed = asyncio.Event()  # replaced at each change: answers wait on it

    def feed(self, event: sync.Event, now: float) -> None:
        before = sync.status(self.sync)
        self.sync, action = sync.apply(self.sync, event, now)
        _said(before, sync.status(self.sync))
        # The machine waits for an answer before it asks for another send: never two at once.
        if action is not None:
            self.next = action
        self._woken.set()
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def idle(self, clock: Callable[[], float]) -> None:
        """Until a send is asked for or the machine's deadline passes."""
        self._woken.clear()
        due = sync.deadline(self.sync)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._woken.wait(), None if due is None else due - clock())

    async def change(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)


class Syncer:
    """The Primary's sync with its Secondary, reached through ``peer``, while started."""

    def __init__(
        self,
        store: Store,
        controller: Controller,
        peer: Peer,
        *,
        clock: Callable[[], float] = time.time,
        poll: float = USERS_POLL,
    ) -> None:
        self.store = store
        self.controller = controller
        self.peer = peer
        self.clock = clock  # wall time: the statuses' "since" is shown to the operator
        self.poll = poll
        self._lanes: dict[Kind, _Lane] = {}
        self._users: Users | None = None  # the snapshot the users' lane is sending
        self._subscription: Subscription | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Ask the Secondary where it stands, then keep it in step until ``stop``."""
        if self._tasks:
            return
        # Subscribed before the applied revision is read: no commit falls in between.
        self._subscription = self.controller.events.subscribe()
        applied = await asyncio.to_thread(self._applied)
        self._users = await asyncio.to_thread(self.store.users_snapshot)
        now = self.clock()
        self._lanes = {
            Kind.CONFIGURATION: _Lane(Kind.CONFIGURATION, applied, now),
            Kind.USERS: _Lane(Kind.USERS, self._users.mark, now),
        }
        jobs: list[Coroutine[Any, Any, None]] = [
            self._follow(self._subscription),
            self._watch_users(),
            *(self._run(lane) for lane in self._lanes.values()),
        ]
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(job) for job in jobs]
        for task in self._tasks:
            task.add_done_callback(_stopped)

    async def stop(self) -> None:
        """Stop syncing; what was on its way is dropped, and asked about at the next start."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._subscription is not None:
            self._subscription.close()
            self._subscription = None

    def status(self) -> dict[Kind, Status]:
        """Each kind's sync as System Overview shows it; empty before ``start``."""
        return {kind: sync.status(lane.sync) for kind, lane in self._lanes.items()}

    def said(self) -> str:
        """The Secondary's sync in a few words: "in sync", "behind by 2", "failed: <reason>",
        its configuration's first, then its users'."""
        found = self.status()
        if not found:
            return "unknown: sync has not started"
        configuration, users = found[Kind.CONFIGURATION], found[Kind.USERS]
        if configuration.state is not State.IN_SYNC:
            return str(configuration)
        return "in sync" if users.state is State.IN_SYNC else f"users {users}"

    async def answer(self, revision: int, timeout: float = ANSWER_WAIT) -> Answer:
        """Whether the Secondary applied ``revision``, waiting at most ``timeout`` seconds for it
        to be sure: applied, refused, unreachable, or run past."""
        lane = self._lanes.get(Kind.CONFIGURATION)
        if lane is None:
            return Answer(revision, False, reason="the Primary's sync has not started")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            found = sync.answer(lane.sync, revision)
            left = deadline - loop.time()
            if _settled(lane.sync, revision, found) or left <= 0:
                return found
            await lane.change(left)

    def _applied(self) -> Mark:
        applied = self.store.applied()
        revision = self.store.revision(applied.revision if applied is not None else 0)
        return Mark(revision.id, revision.digest)

    async def _follow(self, subscription: Subscription) -> None:
        lane = self._lanes[Kind.CONFIGURATION]
        async for event in subscription:
            if not isinstance(event, RevisionApplied | Missed):
                continue
            # The store, not the event, says what runs: events missed are covered too, and the
            # machine only ever sees the applied revision move on.
            applied = await asyncio.to_thread(self._applied)
            if applied.number > lane.sync.target.number:
                lane.feed(Committed(applied), self.clock())

    async def _watch_users(self) -> None:
        lane = self._lanes[Kind.USERS]
        while True:
            await asyncio.sleep(self.poll)
            assert self._users is not None  # set by start
            if await asyncio.to_thread(self.store.users_version) == self._users.version:
                continue
            snapshot = await asyncio.to_thread(self.store.users_snapshot)
            if snapshot.version > self._users.version:
                self._users = snapshot
                lane.feed(Committed(snapshot.mark), self.clock())

    async def _run(self, lane: _Lane) -> None:
        while True:
            action, lane.next = lane.next, None
            if action is None:
                await lane.idle(self.clock)
                if lane.next is None:
                    lane.feed(Tick(), self.clock())
                continue
            lane.feed(await self._carry(lane.sync, action), self.clock())

    async def _carry(self, state: sync.Sync, action: Ask | Send) -> sync.Event:
        """What the Secondary answered to ``action``, as the machine's event."""
        kind = state.kind
        try:
            if isinstance(action, Ask):
                heads = sync.from_json(await self.peer.call("GET", HEADS))
                if not isinstance(heads, Heads):
                    raise MessageError(f"type: the answer to {HEADS} is no heads message")
                if kind is Kind.USERS:
                    return Heard(heads.users, True)
                held = heads.configuration
                return Heard(held, heads.running == held.number)
            body = sync.to_json(await self._copy(action))
            reply = await self.peer.call("POST", _PATHS[kind], body, timeout=state.timeout)
            answer = sync.from_json(reply)
            if not isinstance(answer, Acknowledgement | Refusal):
                raise MessageError(f"type: the answer to {_PATHS[kind]} is no acknowledgement")
            return answer
        except MessageError as error:
            return Unreachable(f"its answer is not understood: {error}")
        except PeerError as error:
            return Unreachable(str(error))

    async def _copy(self, action: Send) -> RevisionCopy | UsersCopy:
        if action.kind is Kind.USERS:
            users = self._users
            # The users' lane only ever sends its target, the snapshot it was given.
            assert users is not None
            assert users.version == action.number
            return UsersCopy(users.mark, users)
        revision = await asyncio.to_thread(self.store.revision, action.number)
        return RevisionCopy(
            Mark(revision.id, revision.digest),
            revision.author,
            revision.message,
            revision.created,
            await asyncio.to_thread(revision.config.model_dump, mode="json"),
            action.apply,
        )


def _settled(state: sync.Sync, revision: int, found: Answer) -> bool:
    """Whether waiting longer could change the commit's answer."""
    if found.applied:
        return True
    if state.target.number < revision:
        return False  # the commit has not reached the sync yet
    held = state.held
    return sync.status(state).state is State.FAILED or (held is not None and held.number > revision)


def _said(before: Status, after: Status) -> None:
    """A sync that fails, or fails otherwise, or recovers, is said in the log: once, not at
    every retry, and not at every commit's passing "behind"."""
    failed = after.state is State.FAILED
    if failed and (before.state, before.reason) != (after.state, after.reason):
        log.warning("HA sync of the %s: %s", after.kind, after, extra={"event": "sync_failed"})
    elif before.state is State.FAILED and not failed:
        log.info("HA sync of the %s: %s", after.kind, after, extra={"event": "sync_recovered"})


def _stopped(task: asyncio.Task[None]) -> None:
    """A sync task ends only when stopped; anything else is a defect, said in the log."""
    if not task.cancelled() and task.exception() is not None:
        log.error("HA sync stopped", exc_info=task.exception())


def answer_json(answer: Answer) -> dict[str, Any]:
    """A commit's answer about the Secondary, as the API gives it: its fields and the sentence."""
    return {**asdict(answer), "said": str(answer)}


def forwarding(peer: Peer) -> Forward:
    """How this Secondary has its Primary (``peer``) do drain, halt and online: the Primary's
    revision once this node applied it too (``Controller.forward``)."""

    async def forward(action: Action) -> int:
        what = f"{action.action.value} of real server {action.server} of {action.service}"
        try:
            reply = await peer.call("POST", ACTIONS, sync.to_json(action), timeout=ANSWER_WAIT * 2)
        except PeerError as error:
            raise ForwardFailed(f"{what} was not done by the Primary: {error}") from None
        try:
            revision, secondary = int(reply["revision"]), reply["secondary"]
            applied, said = secondary["applied"] is True, str(secondary["said"])
        except (KeyError, TypeError, ValueError):
            raise ForwardFailed(f"{what}: the Primary's answer is not understood") from None
        if not applied:
            raise ForwardFailed(
                f"{what} was done by the Primary as revision {revision}, but {said}"
            )
        return revision

    return forward
