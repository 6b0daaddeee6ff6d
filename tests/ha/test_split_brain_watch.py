"""The split-brain watch (balancer.pair.split_brain) on a made-up clock, link and probe: a
look a second, the alarm raised and resolved once each, each logged, audited and published,
and the probe asked only while this node is Active."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pytest

from balancer.events import SplitBrain, said
from balancer.ha.split_brain import Alarm
from balancer.pair.split_brain import Watch
from balancer.pair.status import NodeView

VIP = "198.18.1.100"
MAC = "02:00:00:00:00:02"


@dataclass
class Fakes:
    now: float = 1000.0
    state: str = "active"
    peer: NodeView | None = None
    answered: dict[str, tuple[str, ...]] | None = field(default_factory=dict)
    probed: list[list[str]] = field(default_factory=list)
    audits: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    events: list[SplitBrain] = field(default_factory=list)

    @property
    def view(self) -> NodeView | None:
        return self.peer

    def link(self) -> float | None:
        return None if self.peer is None else 0.4

    async def probe(self, vips: Iterable[str]) -> dict[str, tuple[str, ...]] | None:
        self.probed.append(list(vips))
        return self.answered

    def audit(
        self, *, author: str, action: str, target: str = "", detail: dict[str, Any] | None = None
    ) -> None:
        self.audits.append((author, action, detail or {}))

    def watch(self) -> Watch:
        return Watch(
            lambda: self.state, self, lambda: [VIP], self.events.append, self.audit,
            probe=self, clock=lambda: self.now,
        )  # fmt: skip

    def looks(self, watch: Watch, count: int) -> None:
        for _ in range(count):
            asyncio.run(watch.look())
            self.now += 1.0


def peer(state: str) -> NodeView:
    return NodeView("198.18.0.12", "secondary", state, 3, "builtin", None, "in sync")


def test_raised_and_resolved_once_each_logged_audited_and_published(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fakes = Fakes(answered={VIP: (MAC,)}, peer=peer("active"))
    watch = fakes.watch()
    caplog.set_level(logging.INFO, "balancer.pair.split_brain")
    fakes.looks(watch, 3)
    evidence = (
        "the peer says it is Active too (heard 0.4 s ago)",
        f"{VIP} answered from {MAC} as well as this node",
    )
    assert watch.view() == Alarm(True, 1000.0, evidence)
    assert fakes.events == [SplitBrain(True, 1000.0, evidence, 1001.0)]
    assert said(fakes.events[0]).startswith("split brain: both nodes hold the floating IPs: the")
    assert fakes.audits == [
        ("system", "split_brain", {"since": 1000.0, "evidence": list(evidence)})
    ]
    (record,) = caplog.records
    assert (record.levelname, record.event) == ("ERROR", "split_brain")
    assert f"{VIP} answered from {MAC}" in record.getMessage()

    # The Secondary yielded: it is Passive and answers no more for the VIP.
    fakes.answered, fakes.peer = {VIP: ()}, peer("passive")
    fakes.looks(watch, 3)
    assert watch.view() == Alarm()
    assert fakes.events[1] == SplitBrain(False, 1000.0, (), 1004.0)
    assert said(fakes.events[1]) == "split brain resolved: one node holds the floating IPs"
    assert fakes.audits[1] == (
        "system", "split_brain_resolved", {"since": 1000.0, "evidence": list(evidence)}
    )  # fmt: skip
    assert [r.event for r in caplog.records] == ["split_brain", "split_brain_resolved"]
    assert len(fakes.events) == 2


def test_a_passive_node_is_not_probed_and_raises_nothing() -> None:
    fakes = Fakes(state="passive", answered={VIP: (MAC,)}, peer=peer("active"))
    watch = fakes.watch()
    fakes.looks(watch, 4)
    assert fakes.probed == []
    assert watch.view() == Alarm()
    assert fakes.events == []
    fakes.state = "active"
    fakes.looks(watch, 1)
    assert fakes.probed == [[VIP]]


def test_a_probe_that_cannot_run_leaves_the_peer_s_word() -> None:
    fakes = Fakes(answered=None, peer=peer("active"))
    watch = fakes.watch()
    fakes.looks(watch, 3)
    assert watch.view().evidence == ("the peer says it is Active too (heard 0.4 s ago)",)


def test_it_looks_every_interval_while_started() -> None:
    async def run() -> int:
        fakes = Fakes()
        watch = fakes.watch()
        watch.interval = 0.01
        watch.start()
        await asyncio.sleep(0.2)
        await watch.stop()
        count = len(fakes.probed)
        await asyncio.sleep(0.05)
        assert len(fakes.probed) == count  # stopped
        return count

    assert 3 <= asyncio.run(run()) <= 25


def test_a_look_that_fails_is_logged_once_and_the_watch_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Failing(Fakes):
        async def probe(self, vips: Iterable[str]) -> dict[str, tuple[str, ...]] | None:
            self.probed.append(list(vips))
            raise RuntimeError("no such loop call")

    async def run() -> int:
        fakes = Failing()
        watch = fakes.watch()
        watch.interval = 0.01
        watch.start()
        await asyncio.sleep(0.1)
        await watch.stop()  # and stopping it raises nothing
        return len(fakes.probed)

    assert asyncio.run(run()) >= 3
    said = [r.getMessage() for r in caplog.records if r.name == "balancer.pair.split_brain"]
    assert said == ["split-brain watch: a look failed: RuntimeError: no such loop call"]
