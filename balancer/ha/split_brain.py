"""Split brain: both nodes of the pair holding the floating IPs at once, judged from what this
node sees. Pure: time comes from the caller, and nothing here moves an address (keepalived's
own rule ends a split brain once the nodes hear each other again).

Each ``Look`` is one second's evidence: this node's state, the peer's state as last heard over
the management link (and how long ago), and the VIP self-probe's findings (for each floating
IP this node holds, the other MACs that answered for it). Two kinds of evidence count:

- the peer said it is Active in an answer heard while this node already was (an answer from
  before this node took over says nothing of now);
- another MAC answered ARP for a floating IP this node holds.

A switchover's handover can show both for a moment, within one look: so the alarm is raised
only once evidence has been seen in two looks running and observed ``DEBOUNCE`` s apart (one
stale answer seen twice is one observation), and cleared once there has been none for as long.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

# Evidence must span this long (observed at least this far apart) to raise the alarm, and be
# absent this long to clear it: longer than a handover, short enough to raise within 3 s of
# both holding the floating IPs with a probe and a look every second.
DEBOUNCE = 0.8  # s
# A peer's answer older than this is no evidence of now (the link asks every second).
STALE = 3.0  # s


@dataclass(frozen=True, slots=True)
class Look:
    """What this node sees at ``at`` (seconds, on the caller's clock)."""

    at: float
    state: str  # this node: active | passive | fault | unknown
    # The peer's state as it last answered over the management link, and how many seconds ago;
    # None if it never has.
    peer: str | None = None
    peer_age: float | None = None
    # The VIP self-probe: each floating IP this node holds -> the other MACs that answered for
    # it. None when no probe ran.
    answered: Mapping[str, tuple[str, ...]] | None = None


@dataclass(frozen=True, slots=True)
class Alarm:
    """The split-brain alarm as an operator sees it."""

    raised: bool = False
    since: float | None = None  # when the first evidence was seen, while raised
    evidence: tuple[str, ...] = ()  # in an operator's words, from the latest look


@dataclass(slots=True)
class Detector:
    """Feed it a ``Look`` a second; ``look`` answers "raised" or "resolved" on a change."""

    alarm: Alarm = field(default_factory=Alarm)
    _active_since: float | None = None  # the first look this run of Active was seen in
    # The evidence now lasting: its first and latest observation, and in how many looks.
    _first: float | None = None
    _latest: float | None = None
    _looks: int = 0
    _clean_since: float | None = None  # while raised: the first look without evidence

    def look(self, look: Look) -> str | None:
        if look.state != "active":
            self._active_since = None
        elif self._active_since is None:
            self._active_since = look.at
        found = self._evidence(look)
        if not found:
            self._first = self._latest = None
            self._looks = 0
            if not self.alarm.raised:
                return None
            if self._clean_since is None:
                self._clean_since = look.at
            if look.at - self._clean_since < DEBOUNCE:
                return None
            self.alarm, self._clean_since = Alarm(), None
            return "resolved"
        self._clean_since = None
        observed = [when for when, _ in found]
        if self._first is not None and self._latest is not None:
            observed += [self._first, self._latest]
        self._first, self._latest = min(observed), max(observed)
        self._looks += 1
        evidence = tuple(text for _, text in found)
        if self.alarm.raised:
            self.alarm = Alarm(True, self.alarm.since, evidence)
            return None
        if self._looks < 2 or self._latest - self._first < DEBOUNCE:
            return None
        self.alarm = Alarm(True, self._first, evidence)
        return "raised"

    def _evidence(self, look: Look) -> list[tuple[float, str]]:
        """Each piece of evidence in this look: when it was observed, and what it says."""
        found: list[tuple[float, str]] = []
        if look.state != "active" or self._active_since is None:
            return found
        if look.peer == "active" and look.peer_age is not None and look.peer_age <= STALE:
            heard = look.at - look.peer_age
            if heard >= self._active_since:
                found.append(
                    (heard, f"the peer says it is Active too (heard {look.peer_age:.1f} s ago)")
                )
        for vip, macs in sorted((look.answered or {}).items()):
            if macs:
                found.append(
                    (look.at, f"{vip} answered from {', '.join(macs)} as well as this node")
                )
        return found
