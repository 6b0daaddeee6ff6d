"""The persistence (stick) table: a client's source address -> the real server it was given.

An entry lives for ``timeout`` seconds after it was last used; using it (a new connection or
one ending) renews it, and it never expires while one of the client's connections is open, so
an RDP session longer than the timeout still brings its user back to the same server.

Entries keep the time of their last use, not an expiry, so every entry shares the table's
current timeout (a commit may change it) and least recently used order stays expiry order: an
OrderedDict gives O(1) renewal and sweeps only what has expired.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterator


class StickTable:
    __slots__ = ("_clock", "_entries", "_open", "size", "timeout")

    def __init__(
        self, timeout: float, size: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.timeout = timeout
        self.size = size
        self._clock = clock
        self._entries: OrderedDict[str, tuple[str, float]] = OrderedDict()  # server, last used
        self._open: dict[str, int] = {}  # connections open per client

    def hold(self, client: str) -> None:
        """One of ``client``'s connections is open: its entry does not expire meanwhile."""
        self._open[client] = self._open.get(client, 0) + 1

    def release(self, client: str, server: str | None) -> None:
        """One of ``client``'s connections, to ``server``, ended: the client's entry counts its
        timeout from now. The entry keeps the server it points to: a failover may have moved
        the client since this connection began, and the client stays where it moved. A client
        without an entry (the table was cleared meanwhile) is remembered on ``server``."""
        count = self._open.pop(client, 0) - 1
        if count > 0:
            self._open[client] = count
        entry = self._entries.get(client)
        if entry is not None:
            self.stick(client, entry[0])
        elif server is not None:
            self.stick(client, server)

    def _expired(self, client: str, used: float, now: float) -> bool:
        return used + self.timeout <= now and client not in self._open

    def lookup(self, client: str) -> str | None:
        entry = self._entries.get(client)
        if entry is None:
            return None
        server, used = entry
        if self._expired(client, used, self._clock()):
            del self._entries[client]
            return None
        return server

    def stick(self, client: str, server: str) -> None:
        entries = self._entries
        entries[client] = (server, self._clock())
        entries.move_to_end(client)
        while len(entries) > self.size:  # more than one if a commit made the table smaller
            entries.popitem(last=False)

    def sweep(self) -> int:
        """Drop expired entries; return how many."""
        now = self._clock()
        entries = self._entries
        dropped = 0
        for _ in range(len(entries)):
            client, (server, used) = next(iter(entries.items()))
            if used + self.timeout > now:
                break
            if client in self._open:
                # Still in use: renewed, to the back of the line, and the sweep goes on.
                entries[client] = (server, now)
                entries.move_to_end(client)
                continue
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
        for client, (server, used) in self._entries.items():
            left = self.timeout if client in self._open else used + self.timeout - now
            if left > 0:
                yield client, server, left

    def __len__(self) -> int:
        return len(self._entries)
