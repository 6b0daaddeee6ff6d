"""The persistence (stick) table on a fake clock: stick, look up, renew, expire, evict, sweep."""

from __future__ import annotations

import pytest

from balancer.engines.builtin.persistence import StickTable


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


def table(clock: Clock, timeout: float = 1800.0, size: int = 100) -> StickTable:
    return StickTable(timeout, size, clock)


def test_lookup_after_stick(clock: Clock) -> None:
    stick = table(clock)
    assert stick.lookup("10.0.0.1") is None
    stick.stick("10.0.0.1", "PSM1")
    stick.stick("10.0.0.2", "PSM2")
    assert stick.lookup("10.0.0.1") == "PSM1"
    assert stick.lookup("10.0.0.2") == "PSM2"
    assert stick.lookup("10.0.0.3") is None
    assert len(stick) == 2


def test_stick_again_moves_the_client(clock: Clock) -> None:
    stick = table(clock)
    stick.stick("10.0.0.1", "PSM1")
    stick.stick("10.0.0.1", "PSM2")
    assert stick.lookup("10.0.0.1") == "PSM2"
    assert len(stick) == 1


@pytest.mark.parametrize(
    ("elapsed", "found"),
    [(0, "PSM1"), (1799.9, "PSM1"), (1800, None), (1800.1, None), (86400, None)],
)
def test_expiry_after_timeout(clock: Clock, elapsed: float, found: str | None) -> None:
    stick = table(clock, timeout=1800)
    stick.stick("10.0.0.1", "PSM1")
    clock.advance(elapsed)
    assert stick.lookup("10.0.0.1") == found
    assert len(stick) == (1 if found else 0), "an expired entry found by lookup is dropped"


def test_lookup_alone_does_not_renew(clock: Clock) -> None:
    stick = table(clock, timeout=60)
    stick.stick("10.0.0.1", "PSM1")
    clock.advance(50)
    assert stick.lookup("10.0.0.1") == "PSM1"
    clock.advance(10)
    assert stick.lookup("10.0.0.1") is None


def test_stick_renews(clock: Clock) -> None:
    stick = table(clock, timeout=60)
    stick.stick("10.0.0.1", "PSM1")
    for _ in range(10):  # used every 50 s for 500 s: never expires
        clock.advance(50)
        assert stick.lookup("10.0.0.1") == "PSM1"
        stick.stick("10.0.0.1", "PSM1")
    clock.advance(59.9)
    assert stick.lookup("10.0.0.1") == "PSM1"
    clock.advance(0.1)
    assert stick.lookup("10.0.0.1") is None


def test_size_cap_evicts_the_oldest(clock: Clock) -> None:
    stick = table(clock, size=3)
    for n in range(1, 4):
        stick.stick(f"10.0.0.{n}", f"PSM{n}")
        clock.advance(1)
    stick.stick("10.0.0.1", "PSM1")  # renewed: now the newest
    stick.stick("10.0.0.4", "PSM4")  # over the cap: 10.0.0.2 is the least recently used
    assert len(stick) == 3
    assert stick.lookup("10.0.0.2") is None
    assert [c for c, _, _ in stick.entries()] == ["10.0.0.3", "10.0.0.1", "10.0.0.4"]


def test_size_cap_of_one(clock: Clock) -> None:
    stick = table(clock, size=1)
    stick.stick("a", "PSM1")
    stick.stick("b", "PSM2")
    assert (stick.lookup("a"), stick.lookup("b"), len(stick)) == (None, "PSM2", 1)


def test_a_smaller_size_applies_at_the_next_stick(clock: Clock) -> None:
    """The engine lowers ``size`` on a commit; the table must come down to it, not stay over."""
    stick = table(clock, size=100)
    for n in range(10):
        stick.stick(f"10.0.0.{n}", "PSM1")
    stick.size = 3
    stick.stick("10.0.0.99", "PSM2")
    assert len(stick) == 3
    assert [c for c, _, _ in stick.entries()] == ["10.0.0.8", "10.0.0.9", "10.0.0.99"]


def test_sweep_drops_only_expired_and_counts_them(clock: Clock) -> None:
    stick = table(clock, timeout=100)
    stick.stick("old1", "PSM1")
    stick.stick("old2", "PSM2")
    clock.advance(60)
    stick.stick("new", "PSM1")
    stick.stick("old1", "PSM1")  # renewed: no longer old
    clock.advance(40)  # old2 expires now; new and old1 have 60 s left
    assert stick.sweep() == 1
    assert len(stick) == 2
    assert stick.lookup("old2") is None
    assert stick.sweep() == 0
    clock.advance(60)
    assert stick.sweep() == 2
    assert len(stick) == 0
    assert stick.sweep() == 0


def test_sweep_on_an_empty_table(clock: Clock) -> None:
    assert table(clock).sweep() == 0


def test_a_shorter_timeout_applies_to_entries_already_stuck(clock: Clock) -> None:
    """The engine lowers ``timeout`` on a commit; sweep must still find every expired entry."""
    stick = table(clock, timeout=1800)
    stick.stick("early", "PSM1")
    clock.advance(100)
    stick.timeout = 60
    stick.stick("late", "PSM2")
    clock.advance(61)
    assert stick.sweep() == 2, "'early' was last used 161 s ago, 'late' 61 s ago"
    assert len(stick) == 0
    assert (stick.lookup("early"), stick.lookup("late")) == (None, None)


def test_a_longer_timeout_applies_to_entries_already_stuck(clock: Clock) -> None:
    stick = table(clock, timeout=60)
    stick.stick("a", "PSM1")
    stick.timeout = 3600
    clock.advance(600)
    assert stick.lookup("a") == "PSM1"
    assert list(stick.entries()) == [("a", "PSM1", 3000.0)]


def test_forget_one_server(clock: Clock) -> None:
    stick = table(clock)
    stick.stick("a", "PSM1")
    stick.stick("b", "PSM2")
    stick.stick("c", "PSM1")
    assert stick.forget("PSM1") == 2
    assert (stick.lookup("a"), stick.lookup("b"), stick.lookup("c")) == (None, "PSM2", None)
    assert stick.forget("PSM1") == 0
    assert stick.forget("PSM9") == 0
    assert len(stick) == 1


def test_forget_everything(clock: Clock) -> None:
    stick = table(clock)
    stick.stick("a", "PSM1")
    stick.stick("b", "PSM2")
    assert stick.forget() == 2
    assert len(stick) == 0
    assert stick.lookup("a") is None
    assert stick.forget() == 0


def test_entries_give_seconds_left(clock: Clock) -> None:
    stick = table(clock, timeout=300)
    stick.stick("a", "PSM1")
    clock.advance(100)
    stick.stick("b", "PSM2")
    clock.advance(50)
    assert list(stick.entries()) == [("a", "PSM1", 150.0), ("b", "PSM2", 250.0)]
    clock.advance(150)
    assert list(stick.entries()) == [("b", "PSM2", 100.0)], "expired entries are not shown"


def test_default_clock_is_monotonic() -> None:
    stick = StickTable(timeout=60, size=10)
    stick.stick("a", "PSM1")
    [(client, server, left)] = list(stick.entries())
    assert (client, server) == ("a", "PSM1")
    assert 59 < left <= 60


def test_an_entry_in_use_never_expires_and_counts_from_when_its_last_connection_ends(
    clock: Clock,
) -> None:
    stuck = table(clock, timeout=60)
    stuck.stick("10.0.0.1", "PSM1")
    stuck.hold("10.0.0.1")
    stuck.hold("10.0.0.1")  # two RDP connections from one client
    clock.advance(3600)  # an hour-long session
    assert stuck.sweep() == 0
    assert stuck.lookup("10.0.0.1") == "PSM1"
    assert list(stuck.entries()) == [("10.0.0.1", "PSM1", 60)]
    stuck.release("10.0.0.1", "PSM1")
    clock.advance(120)
    assert stuck.lookup("10.0.0.1") == "PSM1", "one connection is still open"
    stuck.release("10.0.0.1", "PSM1")
    clock.advance(59)
    assert stuck.lookup("10.0.0.1") == "PSM1"
    clock.advance(1)
    assert stuck.lookup("10.0.0.1") is None


def test_a_held_entry_does_not_stop_the_sweep_behind_it(clock: Clock) -> None:
    stuck = table(clock, timeout=60)
    stuck.stick("10.0.0.1", "PSM1")
    stuck.hold("10.0.0.1")
    stuck.stick("10.0.0.2", "PSM2")
    clock.advance(61)
    assert stuck.sweep() == 1
    assert [client for client, _, _ in stuck.entries()] == ["10.0.0.1"]


def test_releasing_for_a_removed_server_forgets_nothing_else(clock: Clock) -> None:
    stuck = table(clock, timeout=60)
    stuck.stick("10.0.0.1", "PSM1")
    stuck.hold("10.0.0.1")
    stuck.release("10.0.0.1", None)  # its server left the configuration meanwhile
    clock.advance(60)
    assert stuck.lookup("10.0.0.1") is None


def test_a_connection_ending_leaves_a_failed_over_client_where_it_moved(clock: Clock) -> None:
    stuck = table(clock, timeout=60)
    stuck.stick("10.0.0.1", "PSM1")
    stuck.hold("10.0.0.1")  # a session on PSM1
    clock.advance(10)
    stuck.stick("10.0.0.1", "PSM2")  # PSM1 failed: the client's new connection went to PSM2
    clock.advance(10)
    stuck.release("10.0.0.1", "PSM1")  # the session on PSM1 ends
    assert stuck.lookup("10.0.0.1") == "PSM2"
    clock.advance(59)
    assert stuck.lookup("10.0.0.1") == "PSM2", "the timeout counts from the session's end"
    clock.advance(1)
    assert stuck.lookup("10.0.0.1") is None


def test_a_connection_ending_after_a_clear_remembers_its_server(clock: Clock) -> None:
    stuck = table(clock, timeout=60)
    stuck.stick("10.0.0.1", "PSM1")
    stuck.hold("10.0.0.1")
    stuck.forget()
    stuck.release("10.0.0.1", "PSM1")
    assert stuck.lookup("10.0.0.1") == "PSM1"
