"""The built-in engine's timeouts on one timer, on a loop whose clock the test moves."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from balancer.engines.builtin.timeouts import RESOLUTION, Timeouts


@dataclass
class Handle:
    when: float
    callback: Callable[[], None]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


@dataclass
class Clock:
    """As much of an event loop as Timeouts uses: time and call_at."""

    now: float = 1000.0
    handles: list[Handle] = field(default_factory=list)

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], None]) -> Handle:
        handle = Handle(when, callback)
        self.handles.append(handle)
        return handle

    def run_until(self, moment: float) -> None:
        """Fire every timer due by ``moment``, in order, as the loop would."""
        while due := [h for h in self.handles if not h.cancelled and h.when <= moment]:
            handle = min(due, key=lambda h: h.when)
            self.handles.remove(handle)
            self.now = max(self.now, handle.when)
            handle.callback()
        self.now = moment


@dataclass(eq=False)
class Relay:
    """Expires at ``deadline``; until then files itself again, as a relay does."""

    timeouts: Timeouts
    deadline: float
    expired_at: float | None = None

    def expire(self) -> None:
        now = self.timeouts.loop.time()
        if now >= self.deadline:
            self.expired_at = now
        else:
            self.timeouts.add(self, self.deadline)


def test_each_deadline_is_met_never_early_and_at_most_a_resolution_late() -> None:
    clock = Clock()
    timeouts = Timeouts(clock)  # type: ignore[arg-type]
    relays = [Relay(timeouts, clock.now + ahead) for ahead in (0.02, 0.3, 4.0, 61.0, 43_200.0)]
    for relay in relays:
        timeouts.add(relay, relay.deadline)

    clock.run_until(clock.now + 50_000)

    for relay in relays:
        assert relay.expired_at is not None
        assert relay.deadline <= relay.expired_at <= relay.deadline + RESOLUTION


def test_a_far_deadline_wakes_only_a_few_times() -> None:
    clock = Clock()
    timeouts = Timeouts(clock)  # type: ignore[arg-type]
    wakes = 0

    class Counted(Relay):
        def expire(self) -> None:
            nonlocal wakes
            wakes += 1
            super().expire()

    relay = Counted(timeouts, clock.now + 12 * 3600)
    timeouts.add(relay, relay.deadline)
    clock.run_until(relay.deadline + 1)
    assert relay.expired_at is not None
    assert wakes <= 30


def test_a_relay_that_leaves_its_bucket_is_not_woken() -> None:
    clock = Clock()
    timeouts = Timeouts(clock)  # type: ignore[arg-type]
    gone, staying = Relay(timeouts, clock.now + 1), Relay(timeouts, clock.now + 1)
    timeouts.add(gone, gone.deadline).discard(gone)
    timeouts.add(staying, staying.deadline)
    clock.run_until(clock.now + 2)
    assert (gone.expired_at, staying.expired_at is not None) == (None, True)
