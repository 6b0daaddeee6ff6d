"""This node's HA state (Active, Passive or Fault), from what keepalived reports, and why.

keepalived writes a line to its notify FIFO on every change of its VRRP instance, such as
``INSTANCE "balancer" MASTER 100``. ``parse`` reads one line, ``apply`` moves the state on by
the table below and says why; both are pure, and time comes from the caller. ``follow`` is the
I/O edge: it reads the FIFO and yields each change.

keepalived does not say why it changed; each reason is what causes that step in keepalived's
VRRP machine. A reload does not repeat the current state, so the state lasts across reloads.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from balancer.ha.keepalived import INSTANCE

log = logging.getLogger(__name__)
LINE_LIMIT = 4096  # keepalived's lines are short; a longer one is no notice of its
_NOTICE = re.compile(r'^INSTANCE "(?P<instance>[^"]+)" (?P<word>[A-Z_]+) (?P<priority>\d+)$')


class State(StrEnum):
    ACTIVE = "Active"  # holds the floating IPs
    PASSIVE = "Passive"  # ready to take them over
    FAULT = "Fault"  # cannot take them over


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
# Every step keepalived takes (from its word before, None at start, to its word now), and why.
TRANSITIONS: dict[tuple[str | None, str], str] = {
    (None, "BACKUP"): STARTED,
    (None, "FAULT"): f"keepalived started, but {FAULTED}",
    ("BACKUP", "MASTER"): "the peer went silent or gave the floating IPs up",
    ("BACKUP", "FAULT"): FAULTED,
    ("BACKUP", "STOP"): STOPPED,
    ("MASTER", "BACKUP"): "the peer took the floating IPs over with a higher priority",
    ("MASTER", "FAULT"): f"{FAULTED}; the floating IPs are given up",
    ("MASTER", "STOP"): f"{STOPPED}; the floating IPs are given up",
    ("FAULT", "BACKUP"): "the link is up and the engine check passes again",
    ("FAULT", "STOP"): STOPPED,
    ("STOP", "BACKUP"): STARTED,
    ("STOP", "FAULT"): f"keepalived started, but {FAULTED}",
}


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
    """Before keepalived has said anything, this node cannot take the floating IPs over."""
    return Status(State.FAULT, None, "keepalived has not reported yet", now)


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


def apply(status: Status, notice: Notice, now: float) -> tuple[Status, Change | None]:
    """The status after ``notice`` and the change, if any. A step keepalived does not take
    raises ValueError; the same word again changes nothing."""
    if notice.word == status.word:
        return status, None
    reason = TRANSITIONS.get((status.word, notice.word))
    if reason is None:
        raise ValueError(
            f"keepalived went from {status.word} to {notice.word}, a step it never takes"
        )
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


async def follow(
    fifo: Path, instance: str = INSTANCE, clock: Callable[[], float] = time.time
) -> AsyncIterator[Change]:
    """Every change of this node's state, as keepalived reports it through ``fifo``."""
    status = initial(clock())
    async for line in lines(fifo):
        try:
            notice = parse(line, instance)
        except ValueError as error:
            log.warning("%s: %s", fifo, error)
            continue
        try:
            status, change = apply(status, notice, clock())
        except ValueError as error:
            log.warning("%s: %s", fifo, error)
            status, change = adopt(status, notice, clock())
        if change is not None:
            yield change
