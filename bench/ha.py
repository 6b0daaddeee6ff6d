"""The HA pair's failover (issue 12): how long new connections to a VIP fail when the Active
node dies (its link cut), when its engine dies, and when it is stopped gracefully, with the
default profile (0.2 s adverts), on each engine.

It runs the end-to-end tests' topology (``tests.ha.cluster``): two real nodes, two lab PSM
servers and a client, each in a network namespace on one switch in 198.18.0.0/15. A figure is
the time from the failure to the end of the first RDP opening that succeeded through the other
node, the client starting an attempt every 10 ms (whether the ones before have ended or not) and
giving each 0.1 s. Connections refused meanwhile are counted: a graceful stop should have none.

Then, issue 13's: clients from SHARE_CLIENTS addresses of the client's, each a client to
persistence, connect in waves over two seconds, and the Active node's link is cut: the share of
their entries the survivor lists, of those made at least a second before the cut (the goal:
all of them), and of the younger ones (``bench.replication.survivors``). And split brain: the
nodes cut off from each other while both stay up (``Topology.partition``), the time from both
holding the VIP to the alarm on either node's status, and from the heal to one owner.
"""

from __future__ import annotations

import shutil
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from balancer.client import ApiError
from balancer.ha.keepalived import KEEPALIVED
from bench import replication
from bench.replication import Share
from bench.report import DASH, number

if TYPE_CHECKING:
    from tests.ha.cluster import Node, Topology

ENGINES = {"builtin": "built-in", "haproxy": "HAProxy"}
# Seconds, at most, as the issue sets them for the default profile.
GOALS = {"link": 1.0, "engine": 2.0, "stop": 0.2, "alarm": 3.0, "heal": 5.0}
TITLES = {
    "link": "node death (its link cut)",
    "engine": "engine death (killed)",
    "stop": "graceful stop (`balancer stop --engine`)",
}
# Issue 13's split brain: a partition with both nodes up (``Topology.partition``).
SPLIT = {
    "alarm": "split brain: both hold the VIP, to the alarm on a node",
    "heal": "split brain: the partition healed, to one owner of each VIP",
}
ROWS = TITLES | SPLIT
REPEATS = 5
SPLIT_RUNS = 3
SHARE_RUNS = 2  # link cuts for the survivor's share, each with clients of its own
SHARE_CLIENTS = 200  # a run's
SHARE = "entries on the survivor of a link cut, made ≥ 1 s before"


@dataclass(frozen=True)
class Found:
    """One failure on one engine: seconds per run; connections refused, of all attempts."""

    seconds: Sequence[float] = ()
    refused: int = 0
    attempts: int = 0
    error: str = ""  # why it could not be measured (all of it, or the runs after the first)


Results = dict[str, dict[str, Found]]  # failure -> engine -> found
Shares = dict[str, list[Share]]  # engine -> the survivor's share at each cut


def met(failure: str, found: Found | None) -> bool | None:
    """The goal met on the median of the runs; None when nothing was measured."""
    if found is None or not found.seconds:
        return None
    return statistics.median(found.seconds) <= GOALS[failure]


def figure(found: Found | None) -> str:
    if found is None:
        return ""
    parts = []
    if found.seconds:
        values = list(found.seconds)
        spread = f" ({number(min(values))}{DASH}{number(max(values))})" if len(values) > 1 else ""
        runs = f"{len(values)} run" + ("s" if len(values) > 1 else "")
        parts.append(f"{number(statistics.median(values))} s{spread}, {runs}")
        if found.attempts:  # split brain's rows have no client attempts
            parts.append(f"{found.refused} of {found.attempts:,} attempts refused")
    if found.error:
        parts.append(found.error)
    return "; ".join(parts) or "not measured"


def table(results: Results, shares: Shares | None = None) -> list[str]:
    head = ["failure", "goal", *ENGINES.values()]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for failure, title in ROWS.items():
        row = results.get(failure, {})
        cells = [title, f"≤ {GOALS[failure]:g} s"]
        for engine in ENGINES:
            verdict = met(failure, row.get(engine))
            state = {None: "", True: " · met", False: " · **not met**"}[verdict]
            cells.append(figure(row.get(engine)) + state)
        lines.append("| " + " | ".join(cells) + " |")
    if shares:
        cells = [replication.share_cell(shares.get(engine, [])) for engine in ENGINES]
        lines.append("| " + " | ".join([SHARE, "100 %", *cells]) + " |")
    return lines


def markdown(
    results: Results, setting: str, notes: Sequence[str] = (), shares: Shares | None = None
) -> list[str]:
    return [
        "## The HA pair's failover (issues 12 and 13)",
        "",
        setting,
        "",
        *table(results, shares),
        *(["", *notes] if notes else []),
    ]


def as_json(results: Results, shares: Shares | None = None) -> dict[str, Any]:
    survivors = {
        engine: [vars(share) for share in found] for engine, found in (shares or {}).items()
    }
    return {"survivors": survivors} | {
        failure: {
            engine: {
                "seconds": list(found.seconds),
                "refused": found.refused,
                "attempts": found.attempts,
                "goal": GOALS[failure],
                "met": met(failure, found),
                "error": found.error,
            }
            for engine, found in engines.items()
        }
        for failure, engines in results.items()
    }


def describe(repeats: int) -> str:
    return (
        f"Two nodes (`balancer serve`, the PSM preset committed on the Primary and synced), two "
        f"lab PSM servers and a client, each in a network namespace on one bridge; keepalived "
        f"with 0.2 s adverts. Each failure {repeats} times on each engine, the Active node "
        f"failing each time: the time from the failure to the end of the first RDP opening "
        f"through the other node, the client starting an attempt every 10 ms, 0.1 s each; each "
        f"cell is the median ({'min' + DASH + 'max'}) of the runs. The survivor's share: "
        f"{SHARE_CLIENTS} clients, each from an address of its own, in waves over "
        f"{replication.SHARE_SPAN:g} s, then the Active node's link cut; {SHARE_RUNS} cuts. "
        f"Split brain: the nodes cut off from each other (IP between them dropped, ARP and "
        f"clients' traffic untouched) and healed, {SPLIT_RUNS} times."
    )


# --- running it --------------------------------------------------------------------------------


@dataclass
class _Runs:
    seconds: list[float] = field(default_factory=list)
    refused: int = 0
    attempts: int = 0
    error: str = ""

    def found(self) -> Found:
        return Found(tuple(self.seconds), self.refused, self.attempts, self.error)


def unavailable() -> str | None:
    from tests.netns import UNAVAILABLE

    if UNAVAILABLE is not None:
        return UNAVAILABLE
    if shutil.which(KEEPALIVED) is None:
        return "keepalived is not installed (make system installs it)"
    return None


def measure(work: Path, repeats: int) -> tuple[Results, Shares, list[str]]:
    """Every failure ``repeats`` times on each engine, then the survivor's share SHARE_RUNS
    times; the results and notes on what failed."""
    from tests.ha.cluster import topology

    runs: dict[str, dict[str, _Runs]] = {f: {e: _Runs() for e in ENGINES} for f in ROWS}
    shares: Shares = {engine: [] for engine in ENGINES}
    notes: list[str] = []
    for engine, shown in ENGINES.items():
        print(f"  the HA pair on {shown}", flush=True)
        try:
            with topology(work / engine, engine, SHARE_RUNS * SHARE_CLIENTS) as pair:
                pair.pair_with_psm()
                pair.settled()
                for failure in TITLES:
                    for _ in range(repeats):
                        moved = pair.fail_over(failure)
                        found = runs[failure][engine]
                        found.seconds.append(moved.seconds)
                        found.refused += sum(o.error == "refused" for o in moved.outcomes)
                        found.attempts += len(moved.outcomes)
                        print(f"    {TITLES[failure]}: {moved.seconds:.3f} s", flush=True)
                for turn in range(SHARE_RUNS):
                    clients = pair.sources[turn * SHARE_CLIENTS : (turn + 1) * SHARE_CLIENTS]
                    shares[engine].append(replication.survivors(pair, clients))
                    print(f"    {SHARE}: {replication.share_cell(shares[engine][-1:])}")
                for _ in range(SPLIT_RUNS):
                    for what, seconds in split_brain(pair).items():
                        runs[what][engine].seconds.append(seconds)
                        print(f"    {SPLIT[what]}: {seconds:.3f} s", flush=True)
        except (AssertionError, ApiError, OSError) as error:
            said = str(error).splitlines()[0] if str(error) else type(error).__name__
            notes.append(f"- {shown}: stopped early: {said}")
    results = {f: {e: r.found() for e, r in by.items()} for f, by in runs.items()}
    return results, {engine: found for engine, found in shares.items() if found}, notes


def split_brain(pair: Topology) -> dict[str, float]:
    """The nodes cut off from each other while both stay up: seconds from both holding the
    RDP VIP to the alarm raised on either node, and from the heal to one owner of each VIP;
    the pair settled again after (the alarm cleared)."""
    from tests.ha.cluster import RDP_VIP, wait_for

    pair.settled()
    pair.partition()
    try:
        wait_for("both nodes holding the VIP", lambda: len(pair.owners(RDP_VIP)) == 2)
        both = time.monotonic()
        wait_for("the split-brain alarm", lambda: any(_alarm(node) for node in pair.nodes))
        alarm = time.monotonic() - both
    finally:
        pair.heal_partition()
    healed = time.monotonic()
    wait_for("one owner of each VIP", lambda: all(len(pair.owners(v)) == 1 for v in pair.vips))
    heal = time.monotonic() - healed
    wait_for("the alarm cleared", lambda: not any(_alarm(node) for node in pair.nodes))
    pair.settled()
    return {"alarm": alarm, "heal": heal}


def _alarm(node: Node) -> bool:
    """Whether ``node``'s status has the split-brain alarm raised."""
    view = node.pair_view()
    found = None if view is None else view.get("split_brain")
    return bool(found and found["raised"])


def run(work: Path, repeats: int = REPEATS) -> tuple[list[str], dict[str, Any]]:
    """The Markdown section and its JSON."""
    print("the HA pair's failover", flush=True)
    why = unavailable()
    if why is not None:
        return markdown({}, describe(repeats), [f"Not measured: {why}."]), {"skipped": why}
    started = time.monotonic()
    results, shares, notes = measure(work, repeats)
    print(f"  took {time.monotonic() - started:.0f} s", flush=True)
    document: Mapping[str, Any] = {"results": as_json(results, shares), "notes": notes}
    return markdown(results, describe(repeats), notes, shares), dict(document)
