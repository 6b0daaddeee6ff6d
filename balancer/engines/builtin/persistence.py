"""The persistence (stick) table: a client's source address -> the real server it was given.

An entry lives for ``timeout`` seconds after it was last used; using it (a new connection or
one ending) renews it. Since every entry of a table has the same timeout, least recently used
order is expiry order, so an OrderedDict gives O(1) renewal and sweeps only what has expired.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterator


class StickTable:
    __slots__ = ("_clock", "_entries", "size", "timeout")

    def __init__(
        self, timeout: float, size: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.timeout = timeout
        self.size = size
        self._clock = clock
        self._entries: OrderedDict[str, tuple[str, float]] = OrderedDict()

    def lookup(self, client: str) -> str | None:
        entry = self._entries.get(client)
        if entry is None:
            return None
        server, expires = entry
        if expires <= self._clock():
            del self._entries[client]
            return None
        return server

    def stick(self, client: str, server: str) -> None:
        entries = self._entries
        entries[client] = (server, self._clock() + self.timeout)
        entries.move_to_end(client)
        if len(entries) > self.size:
            entries.popitem(last=False)

    def sweep(self) -> int:
        """Drop expired entries; return how many."""
        now = self._clock()
        entries = self._entries
        dropped = 0
        while entries:
            client, (_, expires) = next(iter(entries.items()))
            if expires > now:
                break
            del entries[client]
            dropped += 1
        return dropped

    def forget(self, server: str | None = None) -> int:
        """Drop every entry, or only those that point at ``server``; return how many."""
        if server is None:
            count = len(self._entries)
            self._entries.clear()
            return count
        doomed = [client for client, (target, _) in self._entries.items() if target == server]
        for client in doomed:
            del self._entries[client]
        return len(doomed)

    def entries(self) -> Iterator[tuple[str, str, float]]:
        """(client, server, seconds left) for every live entry."""
        now = self._clock()
        for client, (server, expires) in self._entries.items():
            if expires > now:
                yield client, server, expires - now

    def __len__(self) -> int:
        return len(self._entries)
