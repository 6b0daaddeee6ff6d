"""Watching for split brain while paired: once a second, this node's state, the peer's as the
link last heard it and the VIP self-probe's findings go to the judgement (``ha.split_brain``).
When it raises or resolves the alarm, it is logged, audited and published (``SplitBrain``, for
the alert channels); ``view`` is what every page's status bar and ``balancer ha status`` show.

Nothing here moves a floating IP: keepalived's own rule (the Primary keeps them) ends a split
brain once the nodes hear each other again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Protocol

from balancer.events import SplitBrain
from balancer.ha.split_brain import Alarm, Detector, Look
from balancer.pair.background import Background
from balancer.pair.heartbeat import Audit
from balancer.pair.probe import Probe
from balancer.pair.status import NodeView

log = logging.getLogger(__name__)

INTERVAL = 1.0  # s between looks: with two looks to raise, within 3 s of both holding


class Prober(Protocol):
    """``probe.Probe``: each floating IP held here -> the other MACs that answered for it."""

    async def probe(self, vips: Iterable[str]) -> dict[str, tuple[str, ...]] | None: ...


class Heard(Protocol):
    """``link.Link``: the peer's last answer, and how many seconds ago it came."""

    @property
    def view(self) -> NodeView | None: ...

    def link(self) -> float | None: ...


class Watch(Background):
    """``state`` gives this node's state (active, passive, fault, unknown), ``link`` the peer's
    last answer, ``vips`` the floating IPs; ``publish`` and ``audit`` are the controller's
    event stream and the store's audit."""

    def __init__(
        self,
        state: Callable[[], str],
        link: Heard,
        vips: Callable[[], Iterable[str]],
        publish: Callable[[SplitBrain], None],
        audit: Audit,
        *,
        probe: Prober | None = None,
        clock: Callable[[], float] = time.time,
        interval: float = INTERVAL,
    ) -> None:
        self._state = state
        self._link = link
        self._vips = vips
        self._publish = publish
        self._audit = audit
        self._probe = probe or Probe()
        self._clock = clock
        self.interval = interval
        self._detector = Detector()

    def view(self) -> Alarm:
        return self._detector.alarm

    async def look(self) -> None:
        """One look: the probe (only while this node is Active: else it holds nothing), then
        the judgement, and the alarm announced if it changed."""
        state = self._state()
        answered = await self._probe.probe(self._vips()) if state == "active" else None
        peer = self._link.view
        look = Look(
            self._clock(),
            state,
            peer=None if peer is None else peer.state,
            peer_age=self._link.link(),
            answered=answered,
        )
        before = self._detector.alarm
        if self._detector.look(look) is not None:
            self._announce(before, look.at)

    def _announce(self, before: Alarm, at: float) -> None:
        """The alarm raised, or resolved (``before`` says since when it was raised, and why)."""
        alarm = self._detector.alarm
        said = alarm if alarm.raised else before
        detail = {"since": said.since, "evidence": list(said.evidence)}
        if alarm.raised:
            log.error(
                "split brain: both nodes hold the floating IPs: %s",
                "; ".join(alarm.evidence),
                extra={"event": "split_brain"},
            )
            self._audit(author="system", action="split_brain", detail=detail)
        else:
            log.warning(
                "split brain resolved: this node sees no other holder of the floating IPs",
                extra={"event": "split_brain_resolved"},
            )
            self._audit(author="system", action="split_brain_resolved", detail=detail)
        self._publish(SplitBrain(alarm.raised, said.since, alarm.evidence, at))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        failed: str | None = None
        while True:
            started = loop.time()
            try:
                await self.look()
                failed = None
            except Exception as error:  # the watch must not end, nor take the node's service down
                said = f"{type(error).__name__}: {error}"
                if said != failed:
                    log.error("split-brain watch: a look failed: %s", said)
                failed = said
            await asyncio.sleep(max(0.0, self.interval - (loop.time() - started)))
