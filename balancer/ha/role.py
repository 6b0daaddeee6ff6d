"""This node's HA state (Active, Passive or Fault), from what keepalived reports, and why.

keepalived writes a line to its notify FIFO on every change of its VRRP instance, such as
``INSTANCE "balancer" MASTER 100``. ``parse`` reads one line, ``apply`` moves the state on by
the table below and says why; both are pure, and time comes from the caller. ``follow`` is the
I/O edge: it reads the FIFO and yields each change.

The FIFO does not say why. keepalived's log does, before the line where it enters the new
state ("Netlink reports eth0 down", then "Entering FAULT STATE"), and it has written both before
the notice: ``Causes`` collects them, and a step takes the first cause that can lead to it. With
no log, or a cause the table does not know, the reason is what can cause that step in
keepalived's VRRP machine. A reload does not repeat the current state, so it lasts across reloads.
When Balancer stops keepalived itself, it says why (``Tracker.operator``), and that is the reason
of the STOP that follows.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from balancer.ha.keepalived import INSTANCE

log = logging.getLogger(__name__)
LINE_LIMIT = 4096  # keepalived's lines are short; a longer one is no notice of its
KEPT = 16  # causes, and states entered, kept until a notice takes them
_NOTICE = re.compile(r'^INSTANCE "(?P<instance>[^"]+)" (?P<word>[A-Z_]+) (?P<priority>\d+)$')


class State(StrEnum):
    ACTIVE = "Active"  # holds the floating IPs
    PASSIVE = "Passive"  # ready to take them over
    FAULT = "Fault"  # cannot take them over
    UNKNOWN = "Unknown"  # keepalived has not reported yet


class Cause(StrEnum):
    GAVE_UP = "gave up"
    SILENT = "silent"
    PREEMPTED = "preempted"  # the peer is Active at a lower priority, and preemption is on
    ENGINE_DOWN = "engine down"
    ENGINE_UP = "engine up"
    LINK_DOWN = "link down"
    LINK_UP = "link up"
    OPERATOR = "operator"  # Balancer stopped keepalived, and said why


# keepalived's word for its instance's state, and ours.
STATES = {
    "MASTER": State.ACTIVE,
    "BACKUP": State.PASSIVE,
    "FAULT": State.FAULT,
    "STOP": State.FAULT,
}
STARTED = "keepalived started; listening for the peer"
FAULTED = "the link is down or the engine check fails"
STOPPED = "keepalived stopped"
BY_OPERATOR = frozenset({Cause.OPERATOR})
FAULTS = frozenset({Cause.LINK_DOWN, Cause.ENGINE_DOWN})


@dataclass(frozen=True, slots=True)
class Step:
    reason: str  # when the log names no cause
    causes: frozenset[Cause] = frozenset()  # the causes in the log that lead to this step


# Every step keepalived takes (from its word before, None at start, to its word now).
TRANSITIONS: dict[tuple[str | None, str], Step] = {
    (None, "BACKUP"): Step(STARTED),
    (None, "FAULT"): Step(f"keepalived started, but {FAULTED}", FAULTS),
    ("BACKUP", "MASTER"): Step(
        "the peer went silent or gave the floating IPs up, or this node preempted it",
        frozenset({Cause.GAVE_UP, Cause.PREEMPTED, Cause.SILENT}),
    ),
    ("BACKUP", "FAULT"): Step(FAULTED, FAULTS),
    ("BACKUP", "STOP"): Step(STOPPED, BY_OPERATOR),
    ("MASTER", "BACKUP"): Step("the peer took the floating IPs over with a higher priority"),
    ("MASTER", "FAULT"): Step(FAULTED, FAULTS),
    ("MASTER", "STOP"): Step(STOPPED, BY_OPERATOR),
    ("FAULT", "BACKUP"): Step(
        "the link is up and the engine check passes again",
        frozenset({Cause.LINK_UP, Cause.ENGINE_UP}),
    ),
    ("FAULT", "STOP"): Step(STOPPED, BY_OPERATOR),
    # keepalived's last word read after Balancer saw it end (``Tracker.ended``).
    (None, "STOP"): Step(STOPPED, BY_OPERATOR),
    ("STOP", "BACKUP"): Step(STARTED),
    ("STOP", "FAULT"): Step(f"keepalived started, but {FAULTED}", FAULTS),
}
# keepalived 2.2's log lines (after the date) that name a cause, and the cause in our words.
_CAUSES: tuple[tuple[re.Pattern[str], Cause, str], ...] = (
    (re.compile(r"\(\S+\) Backup received priority 0 advertisement"), Cause.GAVE_UP,
     "the peer gave the floating IPs up"),
    # With preemption on, keepalived ignores the Active peer's adverts of a lower priority and
    # its wait for one runs out as if the peer were silent: this line, before that, says why.
    (re.compile(r"\(\S+\) received lower priority \((?P<theirs>\d+)\) advert from (?P<peer>\S+) "
                r"- discarding"), Cause.PREEMPTED,
     "preemption: the Active peer ({peer}) has a lower priority ({theirs})"),
    (re.compile(r"\(\S+\) Receive advertisement timeout"), Cause.SILENT, "the peer went silent"),
    (re.compile(r"VRRP_Script\(engine\) failed \((?P<detail>[^)]*)\)"), Cause.ENGINE_DOWN,
     "the engine is not answering (its check {detail})"),
    (re.compile(r"VRRP_Script\(engine\) timed out"), Cause.ENGINE_DOWN,
     "the engine is not answering (its check timed out)"),
    (re.compile(r"VRRP_Script\(engine\) succeeded"), Cause.ENGINE_UP, "the engine answers again"),
    (re.compile(r"Netlink reports (?P<interface>\S+) down"), Cause.LINK_DOWN,
     "link {interface} is down"),
    (re.compile(r"Netlink reports (?P<interface>\S+) up"), Cause.LINK_UP,
     "link {interface} is up again"),
)  # fmt: skip
_ENTERED = re.compile(r"\(\S+\) Entering (?P<word>MASTER|BACKUP|FAULT) STATE|(?P<stop>Stopping)")


@dataclass(frozen=True, slots=True)
class Notice:
    """One line of the notify FIFO."""

    word: str  # MASTER, BACKUP, FAULT or STOP
    priority: int


@dataclass(frozen=True, slots=True)
class Status:
    """This node's state since ``since``; ``word`` is keepalived's own (None before it spoke)."""

    state: State
    word: str | None
    reason: str
    since: float


@dataclass(frozen=True, slots=True)
class Change:
    """A change of keepalived's state, for the log and the audit; ``before`` lasted ``lasted`` s."""

    before: Status
    after: Status

    @property
    def lasted(self) -> float:
        return self.after.since - self.before.since


def initial(now: float) -> Status:
    """Before keepalived has said anything, this node's state is not known."""
    return Status(State.UNKNOWN, None, "keepalived has not reported yet", now)


def parse(line: str, instance: str = INSTANCE) -> Notice:
    """The notice in ``line``; ValueError if it is none, or is about another instance."""
    match = _NOTICE.match(line.strip())
    if match is None:
        raise ValueError(f"not a keepalived notice: {line.strip()[:200]!r}")
    if match["instance"] != instance:
        raise ValueError(f"a notice about instance {match['instance']!r}, not {instance!r}")
    if match["word"] not in STATES:
        raise ValueError(f"keepalived state {match['word']!r} is none Balancer knows")
    return Notice(match["word"], int(match["priority"]))


def apply(
    status: Status, notice: Notice, now: float, causes: Sequence[tuple[Cause, str]] = ()
) -> tuple[Status, Change | None]:
    """The status after ``notice`` and the change, if any; the reason is the first of
    ``causes`` (from ``Causes.take``) that leads to this step. A step keepalived does not take
    raises ValueError; the same word again changes nothing."""
    if notice.word == status.word:
        return status, None
    step = TRANSITIONS.get((status.word, notice.word))
    if step is None:
        raise ValueError(f"keepalived never goes from {status.word} to {notice.word}")
    reason = next((said for cause, said in causes if cause in step.causes), step.reason)
    after = Status(STATES[notice.word], notice.word, reason, now)
    return after, Change(status, after)


def adopt(status: Status, notice: Notice, now: float) -> tuple[Status, Change]:
    """keepalived's word taken as it is, after a step ``apply`` refused: keepalived, not this
    table, knows who holds the floating IPs."""
    after = Status(
        STATES[notice.word],
        notice.word,
        f"keepalived reports {notice.word} after {status.word}",
        now,
    )
    return after, Change(status, after)


@dataclass
class Causes:
    """keepalived's log read line by line: the causes it gave before each state it entered.

    ``silence`` is how long this node waits for the peer's advert before taking over
    (``Settings.silence``), to say in the reason.
    """

    silence: float | None = None
    _pending: list[tuple[Cause, str]] = field(default_factory=list, init=False)
    # keepalived has started and entered no state it logged: one that starts in Fault (its
    # check failing from the first) never logs entering it.
    _started: bool = field(default=False, init=False)
    # States entered and not yet taken; a notice read late finds its own among them.
    _entered: deque[tuple[str, list[tuple[Cause, str]]]] = field(
        default_factory=lambda: deque(maxlen=KEPT), init=False
    )

    def feed(self, line: str) -> None:
        message = line.rstrip("\n").split(": ", 1)[-1]  # after the date
        entered = _ENTERED.fullmatch(message)
        if entered:
            self._entered.append((entered["word"] or "STOP", self._pending))
            self._pending, self._started = [], False
            return
        if message == "Startup complete":
            self._started = True
            return
        for pattern, cause, said in _CAUSES:
            found = pattern.fullmatch(message)
            if found:
                said = said.format(**found.groupdict())
                if cause is Cause.SILENT and self.silence is not None:
                    said += f" (no advert for {self.silence:.2f} s)"
                self._pending.append((cause, said))
                del self._pending[:-KEPT]  # causes no state follows must not pile up
                return

    def take(self, word: str) -> list[tuple[Cause, str]]:
        """The causes given before keepalived entered ``word``; none if the log has not said
        so yet. States entered before it are dropped: their notices came and went."""
        if all(entered != word for entered, _ in self._entered):
            if word == "FAULT" and self._started:
                self._started = False
                causes, self._pending = self._pending, []
                return causes
            return []
        while True:
            entered, causes = self._entered.popleft()
            if entered == word:
                return causes


async def lines(fifo: Path) -> AsyncIterator[str]:
    """The lines written to ``fifo`` from now on, for as long as the caller reads.

    Opened for reading and writing, so the FIFO never reports an end: keepalived stopping and
    starting again is no end of the stream, and keepalived finds a reader whenever it writes.
    """
    descriptor = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=LINE_LIMIT)
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(descriptor, "rb", buffering=0)
    )
    try:
        while True:
            try:
                line = await reader.readline()
            except ValueError:  # longer than LINE_LIMIT: the rest of it is dropped
                log.warning("a line of over %d bytes in %s is ignored", LINE_LIMIT, fifo)
                continue
            if not line:
                return
            yield line.decode(errors="replace")
    finally:
        transport.close()


class Tracker:
    """This node's status as keepalived's notices move it on, with the reasons from
    ``keepalived_log`` (what keepalived writes from now on), if given; ``silence`` as for
    ``Causes``. The state ``follow`` yields changes of, and a supervisor of keepalived keeps."""

    def __init__(
        self,
        status: Status,
        *,
        instance: str = INSTANCE,
        clock: Callable[[], float] = time.time,
        keepalived_log: Path | None = None,
        silence: float | None = None,
    ) -> None:
        self.status = status
        # Why Balancer stops keepalived now ("operator: switchover"): the next STOP's reason.
        self.operator: str | None = None
        self._instance = instance
        self._clock = clock
        self._causes = Causes(silence)
        self._tail = _Tail(keepalived_log) if keepalived_log is not None else None

    def read(self, line: str) -> Change | None:
        """The change ``line`` of the notify FIFO makes, if any; a line that is no notice of
        this instance is logged and changes nothing."""
        try:
            notice = parse(line, self._instance)
        except ValueError as error:
            log.warning("notify FIFO: %s", error)
            return None
        if self._tail is not None:
            for said in self._tail.read():
                self._causes.feed(said)
        causes = self._causes.take(notice.word)
        if self.operator is not None:
            causes.insert(0, (Cause.OPERATOR, self.operator))
        try:
            self.status, change = apply(self.status, notice, self._clock(), causes)
        except ValueError as error:
            log.warning("notify FIFO: %s", error)
            self.status, change = adopt(self.status, notice, self._clock())
        return change

    def ended(self, reason: str) -> Change | None:
        """keepalived ended with no word (killed, or crashed): this node cannot take the
        floating IPs over until it runs again, which then reports as at a start."""
        if self.status.word is None and self.status.state is State.FAULT:
            return None
        before = self.status
        self.status = Status(State.FAULT, None, reason, self._clock())
        return Change(before, self.status)


async def follow(
    fifo: Path,
    instance: str = INSTANCE,
    clock: Callable[[], float] = time.time,
    keepalived_log: Path | None = None,
    silence: float | None = None,
) -> AsyncIterator[Change]:
    """Every change of this node's state, as keepalived reports it through ``fifo``; the
    reasons from ``keepalived_log`` (what keepalived writes from now on), if given."""
    tracker = Tracker(
        initial(clock()),
        instance=instance,
        clock=clock,
        keepalived_log=keepalived_log,
        silence=silence,
    )
    async for line in lines(fifo):
        change = tracker.read(line)
        if change is not None:
            yield change


class _Tail:
    """The whole lines added to a file since the last read (keepalived appends to its log)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = path.stat().st_size if path.exists() else 0
        self.partial = b""

    def read(self) -> list[str]:
        try:
            with self.path.open("rb") as file:
                if os.fstat(file.fileno()).st_size < self.offset:  # a new file
                    self.offset = 0
                file.seek(self.offset)
                data = file.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        *whole, self.partial = (self.partial + data).split(b"\n")
        return [line.decode(errors="replace") for line in whole]
