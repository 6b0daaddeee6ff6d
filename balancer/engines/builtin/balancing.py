"""Choosing a real server for a new client: weighted round robin and least connections. Pure.

Both work on whatever candidates the caller passes (already filtered for health, state,
weight and capacity), so the same scheduler serves while servers come and go.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar


class Candidate(Protocol):
    @property
    def weight(self) -> int: ...

    @property
    def active(self) -> int: ...


C = TypeVar("C", bound=Candidate)


class RoundRobin:
    """Smooth weighted round robin (as nginx does it): weights 5,1,1 give a,a,b,a,c,a,a —
    interleaved rather than bursts, so a new server is not flooded with a run of clients."""

    __slots__ = ("_current",)

    def __init__(self) -> None:
        # Keyed by the candidate itself: an id() could be reused by a server added later.
        self._current: dict[object, int] = {}

    def pick(self, candidates: Sequence[C]) -> C | None:
        best: C | None = None
        best_current = 0
        total = 0
        current = self._current
        for candidate in candidates:
            value = current.get(candidate, 0) + candidate.weight
            current[candidate] = value
            total += candidate.weight
            if best is None or value > best_current:
                best, best_current = candidate, value
        if best is None:
            return None
        current[best] = best_current - total
        if len(current) > 4 * len(candidates) + 16:
            # Servers removed by a commit leave entries behind; drop them now and then.
            live = set(candidates)
            self._current = {k: v for k, v in current.items() if k in live}
        return best


class LeastConnections:
    """Fewest active connections per unit of weight; ties go round robin."""

    __slots__ = ("_turn",)

    def __init__(self) -> None:
        self._turn = 0

    def pick(self, candidates: Sequence[C]) -> C | None:
        count = len(candidates)
        if not count:
            return None
        self._turn = (self._turn + 1) % count
        best: C | None = None
        for offset in range(count):
            candidate = candidates[(self._turn + offset) % count]
            # a.active / a.weight < b.active / b.weight, without floats or division by zero.
            if best is None or candidate.active * best.weight < best.active * candidate.weight:
                best = candidate
        return best


Scheduler = RoundRobin | LeastConnections


def scheduler(balancing: str) -> Scheduler:
    return LeastConnections() if balancing == "least_connections" else RoundRobin()
