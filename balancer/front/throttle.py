"""The sign-in throttle: failed sign-ins per client address and per user name.

After ``free`` failures for a key, each further attempt must wait: ``delay`` after the next
failure, twice that after the one after, up to ``delay_max``. An attempt made before its time
is refused without the password being checked, so attempts made in parallel gain nothing.
Failures are forgotten ``forget`` seconds after the last one. Pure: time comes from ``clock``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from balancer import defaults

# Keys are remembered up to this many; beyond it the ones failed longest ago go first.
MAX_KEYS = 100_000


class SignInRefused(Exception):
    """Wrong user name or password (or second factor), or (``throttled``) an attempt made
    before its time; ``retry_after`` seconds to wait before the next."""

    def __init__(self, reason: str, retry_after: float, *, throttled: bool = False) -> None:
        super().__init__(reason)
        self.retry_after = retry_after
        self.throttled = throttled


@dataclass(slots=True)
class _Failures:
    count: int
    last: float
    not_before: float


class Throttle:
    def __init__(
        self,
        clock: Callable[[], float],
        *,
        free: int = defaults.SIGN_IN_FREE_FAILURES,
        delay: float = defaults.SIGN_IN_DELAY,
        delay_max: float = defaults.SIGN_IN_DELAY_MAX,
        forget: float = defaults.SIGN_IN_FORGET,
    ) -> None:
        self._clock = clock
        self.free, self.delay, self.delay_max, self.forget = free, delay, delay_max, forget
        self._table: dict[str, _Failures] = {}

    def wait(self, *keys: str) -> float:
        """Seconds until an attempt for all of ``keys`` may be made; 0 if it may now."""
        now = self._clock()
        return max([0.0, *(self._live(key, now).not_before - now for key in keys)])

    def failed(self, *keys: str) -> float:
        """Count a failure for each of ``keys``; the seconds the next attempt must wait."""
        now = self._clock()
        waits = []
        for key in keys:
            failures = self._live(key, now)
            failures.count += 1
            failures.last = now
            failures.not_before = now + self.delay_after(failures.count)
            self._table[key] = failures
            waits.append(failures.not_before - now)
        self._bound(now)
        return max(waits, default=0.0)

    def succeeded(self, *keys: str) -> None:
        for key in keys:
            self._table.pop(key, None)

    def delay_after(self, failures: int) -> float:
        if failures <= self.free:
            return 0.0
        # The exponent is capped too: a float cannot hold 2 ** (a day of failures).
        doublings = min(failures - self.free - 1, 64)
        return min(self.delay_max, self.delay * 2.0**doublings)

    def _live(self, key: str, now: float) -> _Failures:
        found = self._table.get(key)
        if found is None or now - found.last >= self.forget:
            return _Failures(0, now, now)
        return found

    def _bound(self, now: float) -> None:
        if len(self._table) <= MAX_KEYS:
            return
        for key in [k for k, f in self._table.items() if now - f.last >= self.forget]:
            del self._table[key]
        by_age = sorted(self._table, key=lambda k: self._table[k].last)
        for key in by_age[: len(self._table) - MAX_KEYS]:
            del self._table[key]
