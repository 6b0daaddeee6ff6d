"""The one owner of change: it alone drives the engine, one change at a time.

Saved edits wait in the store until a commit applies them (the guide's "Commit changes" box).
Drain, halt and online are operator actions that take effect at once, as on the guide's System
Overview, without committing anyone's other pending edits: the action is applied to the running
revision, then carried into the pending one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from functools import partial
from typing import Any

from balancer import plan
from balancer.configuration import modify_real_server
from balancer.engines import Engine, EngineError, EngineRejected
from balancer.model import Config, RealServerState
from balancer.state import EngineStatus, Overview
from balancer.store import Applied, Revision, Store

log = logging.getLogger("balancer.controller")

SUPERVISE_INTERVAL = 2.0


class CommitFailed(Exception):
    """The engine refused the revision; the previous one still runs."""


@dataclass(frozen=True, slots=True)
class Pending:
    head: int
    applied: int | None
    changes: list[plan.Change]


class Controller:
    def __init__(self, store: Store, engine: Engine) -> None:
        self.store = store
        self.engine = engine
        self._lock = asyncio.Lock()
        self._supervisor: asyncio.Task[None] | None = None

    async def start(self) -> None:
        async with self._lock:
            await self._attach()
        self._supervisor = asyncio.get_running_loop().create_task(self._supervise())

    async def _attach(self) -> None:
        """Find (or start) the data plane and make sure it runs the applied revision."""
        running = await self.engine.attach()
        applied = self.store.applied()
        if applied is not None and running != applied.revision:
            log.info("engine runs revision %s; applying revision %s", running, applied.revision)
            await self.engine.apply(self.store.revision(applied.revision).config, applied.revision)

    async def _supervise(self) -> None:
        while True:
            await asyncio.sleep(SUPERVISE_INTERVAL)
            async with self._lock:
                try:
                    await self.engine.status()
                except EngineError as error:
                    log.error("engine not answering (%s); starting it again", error)
                    try:
                        await self._attach()
                    except EngineError as again:
                        log.error("engine could not be started: %s", again)

    def pending(self) -> Pending:
        head = self.store.head()
        applied = self.store.applied()
        running = self.store.revision(applied.revision).config if applied else None
        return Pending(
            head.id, applied.revision if applied else None, plan.changes(running, head.config)
        )

    async def commit(self, author: str) -> Applied:
        async with self._lock:
            head = self.store.head()
            applied = self.store.applied()
            if applied is not None and applied.revision == head.id:
                return applied
            await self._apply(head, author)
            return self.store.mark_applied(head.id, author=author)

    async def _apply(self, revision: Revision, author: str) -> None:
        try:
            await self.engine.apply(revision.config, revision.id)
        except EngineRejected as error:
            self.store.audit(
                author=author,
                action="commit_rejected",
                target=f"revision {revision.id}",
                detail={"revision": revision.id, "error": str(error)},
            )
            raise CommitFailed(str(error)) from None

    async def set_state(
        self, service: str, server: str, state: RealServerState, author: str
    ) -> Revision:
        """Drain, halt or bring online a real server now; pending edits stay pending."""

        def edit(config: Config) -> Config:
            return modify_real_server(config, service, server, {"state": state.value})

        target = f"{service}/{server}"
        message = f"{state.value} real server {target}"
        save = partial(self.store.save, author=author, action=state.value, target=target)
        async with self._lock:
            head = self.store.head()
            applied = self.store.applied()
            running = self.store.revision(applied.revision) if applied else None
            if (
                running is None
                or running.id == head.id
                or not _has(running.config, service, server)
            ):
                saved = save(edit(head.config), base=head.id, message=message)
                if running is not None and running.id == head.id:
                    await self._apply(saved, author)
                    self.store.mark_applied(saved.id, author=author)
                return saved
            now = save(edit(running.config), base=head.id, message=message)
            await self._apply(now, author)
            self.store.mark_applied(now.id, author=author)
            kept = edit(head.config) if _has(head.config, service, server) else head.config
            return save(kept, base=now.id, message=f"pending changes kept after: {message}")

    async def status(self) -> EngineStatus:
        return await self.engine.status()

    async def overview(self) -> Overview:
        """System Overview; an engine that cannot be reached is part of the answer, not an error."""
        pending = self.pending()
        try:
            engine: EngineStatus | None = await self.status()
            problem = None
        except Exception as error:
            engine, problem = None, str(error)
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
