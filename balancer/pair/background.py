"""What every paired node does once a second on its own (hear the peer, read the engine's
replication, look for split brain): a task of its own while started, cancelled and waited for
when stopped, so no look outlives the pair's part that made it."""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod


class Background(ABC):
    """``_run`` as a task between ``start`` and ``stop``; a second start does nothing."""

    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @abstractmethod
    async def _run(self) -> None:
        """The look, again and again until cancelled."""
