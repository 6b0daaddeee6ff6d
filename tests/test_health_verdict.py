"""The rise/fall verdict, checked against HAProxy's counter (src/check.c) step by step."""

from __future__ import annotations

import random

import pytest

from balancer.health.verdict import Verdict, apply, initial


def run(verdict: Verdict, results: str) -> tuple[Verdict, str]:
    """Feed "P"/"F" results; return the last verdict and "U"/"D" after each check."""
    seen = ""
    for result in results:
        verdict, _ = apply(verdict, result == "P")
        seen += "U" if verdict.up else "D"
    return verdict, seen


def down(rise: int, fall: int) -> Verdict:
    return Verdict(up=False, health=0, rise=rise, fall=fall)


def test_initial_is_up_on_the_edge() -> None:
    assert initial(2, 3) == Verdict(up=True, health=2, rise=2, fall=3)


def test_a_dead_server_goes_down_on_the_first_failed_check() -> None:
    verdict, flipped = apply(initial(2, 3), passed=False)
    assert (verdict, flipped) == (down(2, 3), True)


def test_a_first_pass_makes_it_fully_up() -> None:
    verdict, flipped = apply(initial(2, 3), passed=True)
    assert (verdict, flipped) == (Verdict(up=True, health=4, rise=2, fall=3), False)


# HAProxy's counter for rise 2, fall 3: 0..1 is down, 2..4 is up.
@pytest.mark.parametrize(
    ("health", "passed", "after"),
    [
        (0, False, 0),  # floored
        (0, True, 1),
        (1, True, 4),  # rise reached: jumps to the top
        (1, False, 0),  # a failure while rising starts again from zero
        (4, True, 4),  # capped
        (4, False, 3),
        (3, False, 2),
        (2, False, 0),  # below rise: down, and the counter drops to zero
        (3, True, 4),  # a pass while falling restores full health
        (2, True, 4),
    ],
)
def test_haproxy_counter(health: int, passed: bool, after: int) -> None:
    before = Verdict(up=health >= 2, health=health, rise=2, fall=3)
    verdict, flipped = apply(before, passed)
    assert verdict.health == after
    assert verdict.up == (after >= 2)
    assert flipped == (verdict.up != before.up)


@pytest.mark.parametrize(
    ("rise", "fall", "start_up", "results", "expected"),
    [
        # PSM's published settings: fall 3, rise 2.
        (2, 3, True, "PFFF", "UUUD"),
        (2, 3, True, "PFFPFF", "UUUUUU"),  # a pass between failures resets the count
        (2, 3, False, "PP", "DU"),
        (2, 3, False, "PFPP", "DDDU"),  # a failure between passes resets the count
        (2, 3, False, "PFPFPF", "DDDDDD"),  # flapping never comes up
        (1, 1, True, "PFPF", "UDUD"),  # the most nervous setting follows every check
        (1, 3, False, "P", "U"),
        (3, 1, True, "PF", "UD"),
        (3, 1, False, "PPFPPP", "DDDDDU"),
        (5, 5, True, "FFFFF", "DDDDD"),  # initial is on the edge whatever fall is
        (5, 5, True, "PFFFFF", "UUUUUD"),
    ],
)
def test_sequences(rise: int, fall: int, start_up: bool, results: str, expected: str) -> None:
    start = initial(rise, fall) if start_up else down(rise, fall)
    assert run(start, results)[1] == expected


@pytest.mark.parametrize("rise", [1, 2, 3, 7])
@pytest.mark.parametrize("fall", [1, 2, 3, 7])
def test_thresholds_are_consecutive_counts(rise: int, fall: int) -> None:
    full, _ = apply(initial(rise, fall), passed=True)
    after_falls = run(full, "F" * fall)[1]
    assert after_falls == "U" * (fall - 1) + "D"
    after_rises = run(down(rise, fall), "P" * rise)[1]
    assert after_rises == "D" * (rise - 1) + "U"


def reference(rise: int, fall: int, results: list[bool]) -> list[bool]:
    """The documented behaviour, written independently: UP after ``rise`` consecutive passes,
    DOWN after ``fall`` consecutive failures, starting UP but one failure from DOWN."""
    up, against = True, fall - 1  # against: consecutive results that disagree with ``up``
    states = []
    for passed in results:
        if passed == up:
            against = 0
        else:
            against += 1
            if against == (fall if up else rise):
                up, against = not up, 0
        states.append(up)
    return states


def test_random_sequences_match_the_documented_behaviour() -> None:
    rng = random.Random(20240611)
    for _ in range(500):
        rise, fall = rng.randint(1, 6), rng.randint(1, 6)
        bias = rng.choice([0.2, 0.5, 0.8])  # mostly failing, flapping, mostly passing
        results = [rng.random() < bias for _ in range(rng.randint(0, 60))]
        verdict = initial(rise, fall)
        states = []
        for passed in results:
            before = verdict
            verdict, flipped = apply(verdict, passed)
            assert flipped == (verdict.up != before.up)
            assert 0 <= verdict.health <= rise + fall - 1
            states.append(verdict.up)
        assert states == reference(rise, fall, results), (rise, fall, results)


@pytest.mark.parametrize(
    ("up", "health", "rise", "fall"),
    [
        (True, 1, 2, 3),  # below rise yet up
        (False, 2, 2, 3),  # at rise yet down
        (True, 5, 2, 3),  # above rise+fall-1
        (False, -1, 2, 3),
        (True, 1, 0, 3),
        (True, 1, 1, 0),
    ],
)
def test_impossible_verdicts_are_refused(up: bool, health: int, rise: int, fall: int) -> None:
    with pytest.raises(ValueError, match=r"rise|health"):
        Verdict(up=up, health=health, rise=rise, fall=fall)
