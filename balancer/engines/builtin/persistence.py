"""The persistence (stick) table: a client's source address -> the real server it was given.

An entry lives for ``timeout`` seconds after it was last used; using it (a new connection or
one ending) renews it, and it never expires while one of the client's connections is open, so
an RDP session longer than the timeout still brings its user back to the same server.

Entries keep the time of their last use, not an expiry, so every entry shares the table's
current timeout (a commit may change it) and least recently used order stays expiry order: an
OrderedDict gives O(1) renewal and sweeps only what has expired.

Replication (``balancer.engines.builtin.replication``) journals the table: while ``journal`` is
on, every change leaves the name of the client it touched (a set: a client used a hundred times
between two flushes is sent once), an entry dropped leaves (client, last used), and a clear is
remembered; ``drain`` turns these into changes with the table's state at that moment, so the
hot path adds one set insertion and no allocation. What the peer sends is taken by ``learn``,
``unlearn`` and ``clear`` with ``journaled=False``, which journal nothing: no echo.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

# One change to a table, as journaled and as replicated: (service, client, server, age).
# ``server`` None: the client's entry is dropped; ``client`` None too: the table is cleared.
# ``age`` is seconds since the entry was last used (since the clear): never a clock's reading,
# so the nodes' clocks need not agree.
Change = tuple[str, str | None, str | None, float]


def as_change(data: Any) -> Change:
    """A change from its JSON (a list); ValueError or TypeError if it is not one."""
    service, client, server, age = data
    return (
        str(service),
        None if client is None else str(client),
        None if server is None else str(server),
        float(age),
    )


# An entry dropped here drops the peer's copy unless the peer used it this much more recently:
# both copies carry the same last use, each shifted by its own transit.
SLACK = 1.0


class StickTable:
    __slots__ = (
        "_changed",
        "_cleared",
        "_clock",
        "_dropped",
        "_entries",
        "_open",
        "cleared_at",
        "size",
        "timeout",
    )

    def __init__(
        self, timeout: float, size: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.timeout = timeout
        self.size = size
        self._clock = clock
        self._entries: OrderedDict[str, tuple[str, float]] = OrderedDict()  # server, last used
        self._open: dict[str, int] = {}  # connections open per client
        self._changed: set[str] | None = None  # the journal, while on: clients changed...
        self._dropped: list[tuple[str, float]] = []  # ...entries dropped (client, last used)...
        self._cleared: float | None = None  # ...and the latest clear
        # The last clear: an entry the peer last used before it is not taken back.
        self.cleared_at = float("-inf")

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
            self._drop(client)
            return None
        return server

    def stick(self, client: str, server: str) -> None:
        entries = self._entries
        entries[client] = (server, self._clock())
        entries.move_to_end(client)
        if self._changed is not None:
            self._changed.add(client)
        while len(entries) > self.size:  # more than one if a commit made the table smaller
            self._drop(next(iter(entries)))

    def evict(self, client: str) -> None:
        """Drop ``client``'s entry, if any, as full tables do: the relay core's table, of the
        same size, made room by dropping it (its order of use may differ from this one's by a
        connection in flight, so it says which)."""
        if client in self._entries:
            self._drop(client)

    def _drop(self, client: str) -> None:
        _, used = self._entries.pop(client)
        if self._changed is not None:
            self._dropped.append((client, used))

    def sweep(self, ahead: float = 0.0) -> int:
        """Drop expired entries; return how many. An entry of a client whose connection is
        open is renewed instead, ``ahead`` seconds before it would expire, so that the renewal
        reaches the peer before the peer's copy expires (a 3-hour session keeps its entry)."""
        now = self._clock()
        entries = self._entries
        due = []
        for client, (_, used) in entries.items():  # oldest first: stops at the first not due
            if used + self.timeout > now + ahead:
                break
            due.append(client)
        dropped = 0
        for client in due:
            server, used = entries[client]
            if client in self._open:
                # Still in use: renewed, to the back of the line, and the sweep goes on.
                entries[client] = (server, now)
                entries.move_to_end(client)
                if self._changed is not None:
                    self._changed.add(client)
            elif used + self.timeout <= now:
                self._drop(client)
                dropped += 1
        return dropped

    def forget(self, server: str | None = None) -> int:
        """Drop every entry, or only those that point at ``server``; return how many."""
        if server is None:
            return self.clear(0.0)
        doomed = [client for client, (target, _) in self._entries.items() if target == server]
        for client in doomed:
            self._drop(client)
        return len(doomed)

    # --- replication -------------------------------------------------------------------------

    def journal(self, on: bool) -> None:
        """Journal changes for ``drain`` from now (if not already), or stop and forget them."""
        if on != (self._changed is not None):
            self._changed = set() if on else None
            self._dropped = []
            self._cleared = None

    def drain(self, service: str) -> list[Change]:
        """The changes journaled since the last drain, in the order to apply them: the clear,
        the entries dropped, then every changed entry as it is now (one in use is used now)."""
        changed = self._changed
        if changed is None:
            return []
        now = self._clock()
        changes: list[Change] = []
        if self._cleared is not None:
            changes.append((service, None, None, now - self._cleared))
        changes += [(service, client, None, round(now - used, 3)) for client, used in self._dropped]
        entries, held = self._entries, self._open
        for client in changed:
            entry = entries.get(client)
            if entry is not None:
                age = 0.0 if client in held else round(now - entry[1], 3)
                changes.append((service, client, entry[0], age))
        self._changed, self._dropped, self._cleared = set(), [], None
        return changes

    def dump(self, service: str) -> list[Change]:
        """Every entry as a change, least recently used first (the order a table keeps)."""
        now = self._clock()
        held = self._open
        return [
            (service, client, server, 0.0 if client in held else round(now - used, 3))
            for client, (server, used) in self._entries.items()
        ]

    def learn(self, client: str, server: str, age: float) -> bool:
        """Take the peer's entry unless this one was used more recently (last writer wins),
        it is older than the last clear, or it has expired; journaled not. Whether taken."""
        used = self._clock() - age
        entry = self._entries.get(client)
        if age >= self.timeout or used <= self.cleared_at:
            return False
        if entry is not None and (entry[1] >= used or client in self._open):
            return False
        self._entries[client] = (server, used)
        # Nearly always the newest: a change crosses in well under a second. A whole table
        # arrives oldest first. Out of order costs only a late sweep: lookup checks each
        # entry's own time.
        self._entries.move_to_end(client)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return True

    def unlearn(self, client: str, age: float) -> bool:
        """The peer dropped its entry, last used ``age`` seconds ago: drop this one too unless
        it was used since (or is in use); journaled not. Whether dropped."""
        entry = self._entries.get(client)
        fresh = self._clock() - age + SLACK
        if entry is not None and client not in self._open and entry[1] <= fresh:
            del self._entries[client]
            return True
        return False

    def clear(self, age: float, *, journaled: bool = True) -> int:
        """Drop every entry last used before ``age`` seconds ago (the operator's clear: all of
        them, age 0) and refuse the peer's older ones from now on; return how many."""
        cleared_at = self._clock() - age
        self.cleared_at = max(self.cleared_at, cleared_at)
        doomed = [c for c, (_, used) in self._entries.items() if used <= cleared_at]
        for client in doomed:
            del self._entries[client]
        if journaled and self._changed is not None:
            # Entries dropped by it need not be sent one by one, nor changes before it.
            self._changed, self._dropped, self._cleared = set(), [], cleared_at
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
