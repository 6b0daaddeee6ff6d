"""The relays' connect and idle timeouts, all on one loop timer.

A timer per connection costs about half a kilobyte and a few microseconds to set and cancel;
most connections end long before their timeout. Here a relay is filed in a set, a bucket, by
the time its deadline comes: at the deadline itself (to RESOLUTION, never early) when that is
near, or, when it is far, a little before it (by at most an eighth of the time left). When a
bucket's time comes each relay in it either has expired, or is filed again, closer: a
connection idle for hours is filed again a dozen times, not once per byte it relays, and the
idle connections of a busy hour share a few hundred buckets.
"""

from __future__ import annotations

import asyncio
import heapq
import math
from typing import Protocol

RESOLUTION = 0.05  # seconds: a timeout takes effect up to this much late
NEAR = 8  # deadlines within this many RESOLUTIONs are filed at their own time


class Expiring(Protocol):
    def expire(self) -> None:
        """The time it was filed for has come: act, or file itself again."""


Bucket = set[Expiring]


class Timeouts:
    __slots__ = ("_armed", "_buckets", "_handle", "_ticks", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._buckets: dict[int, Bucket] = {}
        self._ticks: list[int] = []  # a heap of the buckets' times, in RESOLUTIONs
        self._handle: asyncio.TimerHandle | None = None
        self._armed = 0

    def add(self, relay: Expiring, when: float) -> Bucket:
        """File ``relay`` for ``when`` (loop time); leaving the returned set unfiles it."""
        ahead = (when - self.loop.time()) / RESOLUTION
        if ahead <= NEAR:
            tick = math.ceil(when / RESOLUTION)
        else:
            step = 1 << (int(ahead).bit_length() - 4)  # at most an eighth of ``ahead``
            tick = int(when / RESOLUTION) // step * step
        bucket = self._buckets.get(tick)
        if bucket is None:
            bucket = self._buckets[tick] = set()
            heapq.heappush(self._ticks, tick)
            if self._handle is None or tick < self._armed:
                self._arm(tick)
        bucket.add(relay)
        return bucket

    def _arm(self, tick: int) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._armed = tick
        self._handle = self.loop.call_at(tick * RESOLUTION, self._fire)

    def _fire(self) -> None:
        self._handle = None
        # The loop's clock counts milliseconds: a timer may fire a fraction of one early.
        now = (self.loop.time() + 0.001) / RESOLUTION
        ticks = self._ticks
        while ticks and ticks[0] <= now:
            for relay in tuple(self._buckets.pop(heapq.heappop(ticks), ())):
                relay.expire()
        if ticks and (self._handle is None or ticks[0] < self._armed):
            self._arm(ticks[0])

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._buckets.clear()
        self._ticks.clear()
