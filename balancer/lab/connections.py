"""The connections one lab listener accepted: counted for status, aborted when the lab stops."""

from __future__ import annotations

import asyncio


class Connections:
    def __init__(self) -> None:
        self.total = 0
        self._open: set[asyncio.Transport] = set()
        self._changed = asyncio.Event()

    @property
    def active(self) -> int:
        return len(self._open)

    def status(self) -> dict[str, int]:
        return {"active": self.active, "total": self.total}

    def opened(self, transport: asyncio.Transport) -> None:
        self._open.add(transport)
        self.total += 1

    def closed(self, transport: asyncio.Transport) -> None:
        self._open.discard(transport)
        self._changed.set()

    async def abort_all(self) -> None:
        """Drop every connection and wait until each has been told it is lost."""
        for transport in list(self._open):
            transport.abort()
        while self._open:
            self._changed.clear()
            await self._changed.wait()
