"""The schedulers alone: smooth weighted round robin and weighted least connections."""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass

import pytest

from balancer.engines.builtin.balancing import LeastConnections, RoundRobin, scheduler


@dataclass(eq=False)
class Server:
    name: str
    weight: int = 100
    active: int = 0


def servers(**weights: int) -> list[Server]:
    return [Server(name, weight) for name, weight in weights.items()]


def run(pick: RoundRobin | LeastConnections, candidates: list[Server], n: int) -> str:
    chosen = [pick.pick(candidates) for _ in range(n)]
    return "".join(s.name for s in chosen if s is not None)


# --- round robin ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("weights", "sequence"),
    [
        ({"a": 5, "b": 1, "c": 1}, "aabacaa"),  # nginx's own example
        ({"a": 1, "b": 1}, "abababab"),
        ({"a": 100, "b": 100, "c": 100}, "abcabcabc"),
        ({"a": 2, "b": 1}, "abaaba"),
        ({"a": 1}, "aaa"),
        ({"a": 3, "b": 2}, "abab" + "a"),
    ],
)
def test_round_robin_exact_sequence(weights: dict[str, int], sequence: str) -> None:
    assert run(RoundRobin(), servers(**weights), len(sequence)) == sequence


@pytest.mark.parametrize(
    "weights",
    [
        {"a": 5, "b": 1, "c": 1},
        {"a": 256, "b": 100, "c": 1},
        {"a": 3, "b": 7},
        {"a": 100, "b": 100, "c": 100, "d": 100},
        {"a": 1, "b": 2, "c": 3, "d": 4, "e": 5},
    ],
)
def test_round_robin_exact_proportions_over_each_cycle(weights: dict[str, int]) -> None:
    """Over every whole cycle (sum of weights picks) each server gets exactly its weight."""
    candidates = servers(**weights)
    rr = RoundRobin()
    cycle = sum(weights.values())
    for _ in range(3):
        assert Counter(run(rr, candidates, cycle)) == weights


def test_round_robin_interleaves_the_heavy_server() -> None:
    picks = run(RoundRobin(), servers(a=5, b=1, c=1), 70)
    assert "aaaaa" not in picks, "never all five of a cycle in one burst"
    assert picks == "aabacaa" * 10


def test_round_robin_with_a_changing_candidate_list() -> None:
    a, b, c = servers(a=1, b=1, c=1)
    rr = RoundRobin()
    assert run(rr, [a, b, c], 3) == "abc"
    # b is busy (full, tried, drained) for a while: the others share its turns.
    assert Counter(run(rr, [a, c], 6)) == {"a": 3, "c": 3}
    # b comes back and takes its share again, with no long run of any one server.
    picks = run(rr, [a, b, c], 30)
    assert Counter(picks) == {"a": 10, "b": 10, "c": 10}
    assert all(x not in picks for x in ("aaa", "bbb", "ccc"))


def test_round_robin_with_a_new_server_added() -> None:
    a, b = servers(a=1, b=1)
    rr = RoundRobin()
    run(rr, [a, b], 5)
    c = Server("c", 1)
    picks = run(rr, [a, b, c], 30)
    assert Counter(picks) == {"a": 10, "b": 10, "c": 10}
    assert "cc" not in picks, "a new server is not flooded"


def test_round_robin_forgets_removed_servers() -> None:
    rr = RoundRobin()
    keep = Server("keep", 1)
    for _ in range(100):
        rr.pick([keep, Server("gone", 1)])
    assert rr.pick([keep]) is keep
    assert len(rr._current) <= 4 * 1 + 16 + 1, "entries of removed servers are dropped"


@pytest.mark.parametrize("pick", [RoundRobin(), LeastConnections()], ids=["rr", "lc"])
def test_no_candidates_gives_none(pick: RoundRobin | LeastConnections) -> None:
    assert pick.pick([]) is None
    assert pick.pick(()) is None


# --- least connections ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("candidates", "winner"),
    [
        ([Server("a", 100, 3), Server("b", 100, 1), Server("c", 100, 2)], "b"),
        ([Server("a", 100, 0), Server("b", 100, 5)], "a"),
        # active/weight: 2/200 beats 2/100
        ([Server("a", 100, 2), Server("b", 200, 2)], "b"),
        ([Server("a", 200, 2), Server("b", 100, 2)], "a"),
        # 3/200 = 0.015 beats 2/100 = 0.02
        ([Server("a", 100, 2), Server("b", 200, 3)], "b"),
        # 5/200 = 0.025 loses to 2/100
        ([Server("a", 100, 2), Server("b", 200, 5)], "a"),
        ([Server("a", 1, 0), Server("b", 256, 1)], "a"),
    ],
)
def test_least_connections_picks_fewest_per_weight(candidates: list[Server], winner: str) -> None:
    lc = LeastConnections()
    for _ in range(len(candidates) * 2):  # whatever the rotation, the least loaded wins
        chosen = lc.pick(candidates)
        assert chosen is not None
        assert chosen.name == winner


def test_least_connections_ties_rotate() -> None:
    picks = run(LeastConnections(), servers(a=100, b=100, c=100), 9)
    assert Counter(picks) == {"a": 3, "b": 3, "c": 3}
    assert all(x != y for x, y in itertools.pairwise(picks))


def test_least_connections_ties_among_the_least_loaded_only() -> None:
    a, b, c = Server("a", 100, 1), Server("b", 100, 1), Server("c", 100, 4)
    picks = run(LeastConnections(), [a, b, c], 12)
    assert set(picks) == {"a", "b"}, "both tied servers get clients, the busy one none"


def test_least_connections_follows_the_counters() -> None:
    """As the engine counts each new connection, load spreads by weight."""
    a, b = Server("a", 200), Server("b", 100)
    lc = LeastConnections()
    for _ in range(30):
        chosen = lc.pick([a, b])
        assert chosen is not None
        chosen.active += 1
    assert (a.active, b.active) == (20, 10)


def test_scheduler_by_name() -> None:
    assert isinstance(scheduler("least_connections"), LeastConnections)
    assert isinstance(scheduler("round_robin"), RoundRobin)
