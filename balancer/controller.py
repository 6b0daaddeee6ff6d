"""The one owner of change: it alone drives the engine, one change at a time.

Saved edits wait in the store until a commit applies them (the guide's "Commit changes" box).
Drain, halt and online are operator actions that take effect at once, as on the guide's System
Overview, without committing anyone's other pending edits: the action is applied to the running
revision, then carried into the pending one.

The data plane failing never takes the management plane with it. An engine that cannot start,
or refuses the applied revision (a port another process holds, a limit HAProxy cannot raise), is
a fault kept in the engine's own words for System Overview, and the supervisor tries again,
waiting longer each time, until it works or a commit brings a configuration that does.

On the Secondary of an HA pair the cluster configuration is the Primary's: saves and commits
are refused here, in one line naming the Primary (``ReadOnly``); revisions come from the
Primary (``receive``, ``run_received``), and drain, halt and online are done by the Primary
(``forward``), whose revision then reaches both nodes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

from balancer import events, plan
from balancer.edits import Edit
from balancer.engines import Engine, EngineError, EngineRejected
from balancer.events import (
    EngineChanged,
    HealthChanged,
    Missed,
    OperatorAction,
    RevisionApplied,
    RevisionSaved,
    Stream,
)
from balancer.ha import sync
from balancer.ha.sync import Action, Route
from balancer.model import Config, RealServerState
from balancer.state import EngineStatus, Overview
from balancer.store import Applied, NotFound, ReadOnly, Revision, Store
from balancer.validate import Invalid

log = logging.getLogger("balancer.controller")

SUPERVISE_INTERVAL = 2.0
# After a failed start the supervisor doubles its wait up to this: a port another process holds
# may be freed at any time, and trying costs little.
RETRY_LIMIT = 60.0


class CommitFailed(Exception):
    """The engine refused the revision; the previous one still runs."""


class ForwardFailed(Exception):
    """Drain, halt or online asked on an HA pair's Secondary that the Primary did not do, or
    did without the Secondary applying it; why, in one line."""


# How the Secondary has the Primary do an action: the Primary's revision that did it, once the
# Secondary applied it too; ForwardFailed otherwise.
Forward = Callable[[Action], Awaitable[int]]


@dataclass(frozen=True, slots=True)
class Fault:
    """Why the data plane does not run the applied revision, in the engine's words."""

    error: str
    running: bool  # the engine runs, with nothing of the applied revision


@dataclass(frozen=True, slots=True)
class Pending:
    head: int
    applied: int | None
    changes: list[plan.Change]


@dataclass(frozen=True, slots=True)
class Commits:
    """The revisions given to the engine since the daemon started (GET /metrics): how many,
    how many of them failed, and the seconds they took in all."""

    count: int = 0
    failed: int = 0
    seconds: float = 0.0


class Controller:
    def __init__(
        self,
        store: Store,
        engine: Engine,
        events: Stream | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.engine = engine
        # What happens here, published for the WebUI's live views, the logs and the HA sync.
        self.events = Stream() if events is None else events
        self._clock = clock
        # System Overview asks for the Commit box every 2 s: it is read from the store again
        # only when the stream says a revision was saved or applied (whoever saved it).
        self._revisions = self.events.subscribe()
        self._pending: Pending | None = None
        # Each real server's (health, reason) at the supervisor's last look; None before it.
        self._health: dict[tuple[str, str], tuple[str, str]] | None = None
        self._lock = asyncio.Lock()
        self._supervisor: asyncio.Task[None] | None = None
        self._fault: Fault | None = None
        # The revision the engine runs, as far as the controller knows: what plans start from.
        self._runs: int | None = None
        # Set by the HA pair's wiring while this node is a Secondary that can reach its Primary.
        self.forward: Forward | None = None
        self.commits = Commits()

    @property
    def engine_error(self) -> str | None:
        """Why the data plane does not run the applied revision; None when it does."""
        return self._fault.error if self._fault is not None else None

    async def start(self) -> None:
        """Find or start the data plane with the applied revision; a failure is a fault to
        show and retry (see ``engine_error``), never an exception."""
        async with self._lock:
            await self._recover()
        self._supervisor = asyncio.get_running_loop().create_task(self._supervise())

    async def _recover(self) -> None:
        """Find (or start) the data plane and make sure it runs the applied revision."""
        try:
            self._runs = await self.engine.attach()
        except EngineError as error:
            self._runs = None
            self._faulty(Fault(str(error), running=False))
            return
        applied = self.store.applied()
        if applied is not None and self._runs != applied.revision:
            log.info("engine runs revision %s; applying revision %s", self._runs, applied.revision)
            try:
                await self._engine_apply(self.store.revision(applied.revision))
            except EngineRejected as error:
                self._faulty(Fault(f"revision {applied.revision} refused: {error}", running=True))
                return
            except EngineError as error:
                self._faulty(Fault(str(error), running=False))
                return
            self.events.publish(RevisionApplied(applied.revision, "system", self._clock()))
        self._healthy()

    def _faulty(self, fault: Fault) -> None:
        if fault.error != self.engine_error:  # said once, not at every retry
            self.events.publish(EngineChanged(fault.error, self._clock()))
        self._fault = fault
        self._health = None  # what a restarted engine reports first is no change

    def _healthy(self) -> None:
        if self._fault is not None:
            self.events.publish(EngineChanged(None, self._clock()))
        self._fault = None

    async def _supervise(self) -> None:
        wait = SUPERVISE_INTERVAL
        while True:
            await asyncio.sleep(wait)
            failing = await self.check()
            wait = min(wait * 2, RETRY_LIMIT) if failing else SUPERVISE_INTERVAL

    async def check(self) -> bool:
        """The supervisor's look: the engine's status compared with the last one's, or, after
        a fault, the engine found or started again. Whether the engine is (still) at fault."""
        async with self._lock:
            if self._fault is None:
                try:
                    self._compare(await self.engine.status())
                except EngineError as error:
                    log.error("engine not answering (%s); starting it again", error)
                    await self._recover()
            else:
                await self._recover()
            return self._fault is not None

    def _compare(self, status: EngineStatus) -> None:
        """One HealthChanged per real server whose health, or whose reason for being down,
        differs from the last look. The first look says nothing: every server's health is on
        System Overview already, and 10,000 lines at each start would bury the changes. A
        reason that changes while a server is up ("not checked yet", then "connected") is no
        news either."""
        now = {
            (vs.label, rs.label): (rs.health.value, rs.reason)
            for vs in status.virtual_services
            for rs in vs.real_servers
        }
        before, self._health = self._health, now
        if before is None:
            return
        for (service, server), (health, reason) in now.items():
            was = before.get((service, server))
            if was is not None and (was[0] != health or (health != "up" and was[1] != reason)):
                self.events.publish(HealthChanged(service, server, health, reason, self._clock()))

    def _plan(self, revision: Revision) -> plan.Plan:
        """From what the engine runs to ``revision``: the one comparison a commit makes."""
        base = self._runs
        running = None
        if base is not None:
            try:
                running = self.store.revision(base).config
            except NotFound:  # a revision of another store: the engine makes its own plan
                base = None
        return plan.make(running, revision.config, revision.id, base)

    async def _engine_apply(self, revision: Revision) -> None:
        """Apply ``revision``; what the engine runs after an error other than a refusal (which
        leaves the previous revision running) is not known."""
        try:
            await self.engine.apply(self._plan(revision))
        except EngineRejected:
            raise
        except EngineError:
            self._runs = None
            raise
        self._runs = revision.id

    def pending(self) -> Pending:
        """The Commit box: from the store when a revision was saved or applied since the last
        answer (or events were missed), else the last answer."""
        if any(
            isinstance(e, RevisionSaved | RevisionApplied | Missed)
            for e in self._revisions.pending()
        ):
            self._pending = None
        if self._pending is None:
            head = self.store.head()
            applied = self.store.applied()
            running = self.store.revision(applied.revision).config if applied else None
            self._pending = Pending(
                head.id, applied.revision if applied else None, plan.changes(running, head.config)
            )
        return self._pending

    def save(self, edit: Edit, *, base: int | None, author: str) -> Revision:
        """Save ``edit`` of the newest configuration as a new revision, audited and told to the
        event stream; Conflict if ``base`` is no longer the newest (None: the newest now). It
        runs once committed."""
        self._refuse_edit()
        head = self.store.head()
        config = edit.apply(head.config)
        cannot = self.engine.problems(config, head.config)
        if cannot:
            raise Invalid(cannot)
        return self._save(config, edit, base=head.id if base is None else base, author=author)

    def _save(
        self, config: Config, edit: Edit, *, base: int, author: str, message: str | None = None
    ) -> Revision:
        saved = self.store.save(
            config,
            base=base,
            author=author,
            message=edit.message if message is None else message,
            action=edit.action,
            target=edit.target,
        )
        self.events.publish(
            RevisionSaved(saved.id, author, edit.action, edit.target, self._clock())
        )
        return saved

    def _refuse_edit(self) -> None:
        """On an HA pair's Secondary the configuration is the Primary's (``ReadOnly``)."""
        refused = self.store.read_only()
        if refused is not None:
            raise ReadOnly(refused)

    async def commit(self, author: str) -> Applied:
        """Apply the newest saved revision. After a fault the engine is started and given the
        applied revision first, as the supervisor would: a commit is how an operator says 'now'."""
        self._refuse_edit()
        return await self._commit(None, author)

    def receive(
        self,
        config: Config,
        *,
        revision: int,
        digest: str,
        author: str,
        message: str,
        created: float,
    ) -> Revision:
        """Record a revision the Primary of an HA pair made, under its number and digest
        (``Store.receive``), told to the event stream as a save. It runs once ``run_received``."""
        received = self.store.receive(
            config,
            revision=revision,
            digest=digest,
            author=author,
            message=message,
            created=created,
        )
        self.events.publish(RevisionSaved(revision, author, "receive", "", self._clock()))
        return received

    async def run_received(self, revision: int, author: str) -> Applied:
        """Apply ``revision``, received from the Primary, as a commit applies the head."""
        return await self._commit(revision, author)

    async def _commit(self, revision: int | None, author: str) -> Applied:
        async with self._lock:
            if self._fault is not None:
                await self._recover()
                if self._fault is not None and not self._fault.running:
                    raise EngineError(self._fault.error)
            wanted = self.store.head() if revision is None else self.store.revision(revision)
            applied = self.store.applied()
            if self._fault is None and applied is not None and applied.revision == wanted.id:
                return applied
            with self._timed():
                await self._apply(wanted, author)
            return self._mark_applied(wanted.id, author)

    @contextlib.contextmanager
    def _timed(self) -> Iterator[None]:
        started, failed = time.monotonic(), 1
        try:
            yield
            failed = 0
        finally:
            took = time.monotonic() - started
            before = self.commits
            self.commits = Commits(before.count + 1, before.failed + failed, before.seconds + took)

    def _mark_applied(self, revision: int, author: str) -> Applied:
        applied = self.store.mark_applied(revision, author=author)
        self.events.publish(RevisionApplied(revision, author, self._clock()))
        return applied

    async def _apply(self, revision: Revision, author: str) -> None:
        try:
            await self._engine_apply(revision)
        except EngineRejected as error:
            self.store.audit(
                author=author,
                action="commit_rejected",
                target=f"revision {revision.id}",
                detail={"revision": revision.id, "error": str(error)},
            )
            self.events.publish(events.CommitFailed(revision.id, author, str(error), self._clock()))
            raise CommitFailed(str(error)) from None
        self._healthy()

    async def set_state(
        self, service: str, server: str, state: RealServerState, author: str
    ) -> Revision:
        """Drain, halt or bring online a real server now; pending edits stay pending. On an HA
        pair's Secondary the Primary does it, and its revision is the answer."""
        pair = self.store.node_settings().pair
        if pair is not None and sync.act(sync.role_of(pair)) is Route.PRIMARY:
            if self.forward is None:
                raise ForwardFailed(
                    f"drain, halt and online are done by the Primary at {sync.peer_at(pair)}, "
                    "which this Secondary has not reached yet"
                )
            return self.store.revision(await self.forward(Action(state, service, server, author)))
        edit = Edit.set_state(service, server, state)
        save = partial(self._save, edit=edit, author=author)

        def acted() -> None:
            self.events.publish(OperatorAction(state.value, service, server, author, self._clock()))

        async with self._lock:
            head = self.store.head()
            applied = self.store.applied()
            running = self.store.revision(applied.revision) if applied else None
            if (
                running is None
                or running.id == head.id
                or not _has(running.config, service, server)
            ):
                saved = save(edit.apply(head.config), base=head.id)
                if running is not None and running.id == head.id:
                    await self._apply(saved, author)
                    self._mark_applied(saved.id, author)
                    acted()
                return saved
            now = save(edit.apply(running.config), base=head.id)
            await self._apply(now, author)
            self._mark_applied(now.id, author)
            acted()
            kept = edit.apply(head.config) if _has(head.config, service, server) else head.config
            return save(kept, base=now.id, message=f"pending changes kept after: {edit.message}")

    async def status(self) -> EngineStatus:
        return await self.engine.status()

    async def overview(self) -> Overview:
        """System Overview; an engine that cannot be reached, or does not run the applied
        revision, is part of the answer, not an error."""
        pending = self.pending()
        fault = self._fault
        engine: EngineStatus | None = None
        problem = fault.error if fault is not None else None
        if fault is None or fault.running:
            try:
                engine = await self.status()
            except Exception as error:
                problem = str(error)
        return Overview(
            head=pending.head,
            applied=pending.applied,
            pending=[str(c) for c in pending.changes],
            engine=engine,
            engine_error=problem,
        )

    async def configuration(self) -> str:
        return await self.engine.configuration()

    async def persistence(self, service: str) -> list[dict[str, Any]]:
        return await self.engine.persistence(service)

    async def clear_persistence(self, service: str) -> int:
        async with self._lock:
            return await self.engine.clear_persistence(service)

    async def close(self, *, stop_engine: bool) -> None:
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        async with self._lock:
            if stop_engine:
                await self.engine.stop()
            else:
                await self.engine.detach()


def _has(config: Config, service: str, server: str) -> bool:
    vs = config.virtual_service(service)
    return vs is not None and vs.real_server(server) is not None
