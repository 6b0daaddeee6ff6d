"""This node's HA state from keepalived's notify FIFO: the pure machine, and the FIFO read."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from balancer.ha import role
from balancer.ha.role import State

RECORDED = Path(__file__).parent / "recorded"  # keepalived 2.2.7's logs in tests/ha/test_keepalived


def feed(lines: list[str]) -> list[role.Change]:
    """The changes ``lines`` make, one second apart, from the start."""
    status = role.initial(0.0)
    changes = []
    for second, line in enumerate(lines, start=1):
        status, change = role.apply(status, role.parse(line), float(second))
        if change is not None:
            changes.append(change)
    return changes


def test_a_takeover_a_fault_and_the_way_back_each_say_why() -> None:
    changes = feed(
        [
            'INSTANCE "balancer" BACKUP 100',
            'INSTANCE "balancer" MASTER 100',
            'INSTANCE "balancer" FAULT 100',
            'INSTANCE "balancer" BACKUP 100',
            'INSTANCE "balancer" STOP 100',
        ]
    )
    assert [(c.after.state, c.after.reason) for c in changes] == [
        (State.PASSIVE, "keepalived started; listening for the peer"),
        (
            State.ACTIVE,
            "the peer went silent or gave the floating IPs up, or this node preempted it",
        ),
        (State.FAULT, "the link is down or the engine check fails"),
        (State.PASSIVE, "the link is up and the engine check passes again"),
        (State.FAULT, "keepalived stopped"),
    ]
    assert [c.after.since for c in changes] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert changes[1].before.state is State.PASSIVE
    assert changes[1].lasted == 1.0


def test_before_keepalived_speaks_the_state_is_unknown() -> None:
    status = role.initial(7.0)
    assert (status.state, status.word, status.since) == (State.UNKNOWN, None, 7.0)


def test_a_stop_balancer_asked_for_says_why_and_only_that_stop() -> None:
    ticks = iter(float(n) for n in range(100))
    tracker = role.Tracker(role.initial(0.0), clock=lambda: next(ticks))
    tracker.read('INSTANCE "balancer" MASTER 150')
    tracker.operator = "operator: switchover"
    stopped = tracker.read('INSTANCE "balancer" STOP 150')
    assert stopped is not None
    assert (stopped.before.state, stopped.after.state) == (State.ACTIVE, State.FAULT)
    assert stopped.after.reason == "operator: switchover"
    started = tracker.read('INSTANCE "balancer" BACKUP 150')
    assert started is not None
    assert started.after.reason == "keepalived started; listening for the peer"
    assert tracker.read("noise") is None
    assert tracker.status == started.after


def test_keepalived_that_ends_unasked_is_a_fault_until_it_reports_again() -> None:
    ticks = iter(float(n) for n in range(100))
    tracker = role.Tracker(role.initial(0.0), clock=lambda: next(ticks))
    tracker.read('INSTANCE "balancer" MASTER 150')
    ended = tracker.ended("keepalived exited with status -9: no output")
    assert ended is not None
    assert (ended.after.state, ended.after.word) == (State.FAULT, None)
    assert ended.after.reason == "keepalived exited with status -9: no output"
    assert tracker.ended("again") is None
    late = tracker.read('INSTANCE "balancer" STOP 150')  # its last word, read after its end
    assert late is not None
    assert late.after.reason == "keepalived stopped"
    back = tracker.read('INSTANCE "balancer" BACKUP 150')
    assert back is not None
    assert back.after.state is State.PASSIVE


def test_the_same_word_again_changes_nothing() -> None:
    status, _ = role.apply(role.initial(0.0), role.parse('INSTANCE "balancer" BACKUP 100'), 1.0)
    again, change = role.apply(status, role.parse('INSTANCE "balancer" BACKUP 100'), 5.0)
    assert change is None
    assert again == status  # since stays 1.0: the state did not begin again


def test_a_step_keepalived_never_takes_raises_and_can_be_adopted() -> None:
    status, _ = role.apply(role.initial(0.0), role.parse('INSTANCE "balancer" BACKUP 100'), 1.0)
    status, _ = role.apply(status, role.parse('INSTANCE "balancer" FAULT 100'), 2.0)
    master = role.parse('INSTANCE "balancer" MASTER 100')
    with pytest.raises(ValueError, match="never goes from FAULT to MASTER"):
        role.apply(status, master, 3.0)
    adopted, change = role.adopt(status, master, 3.0)
    assert adopted.state is State.ACTIVE
    assert change.after.reason == "keepalived reports MASTER after FAULT"


def test_keepalived_can_stop_in_every_state_and_start_again() -> None:
    for word in ("BACKUP", "MASTER", "FAULT"):
        assert role.TRANSITIONS[(word, "STOP")].reason == "keepalived stopped"
    assert role.TRANSITIONS[("STOP", "BACKUP")] == role.TRANSITIONS[(None, "BACKUP")]


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("", "not a keepalived notice"),
        ('GROUP "pair" MASTER 100', "not a keepalived notice"),
        ('INSTANCE "other" MASTER 100', "instance 'other', not 'balancer'"),
        ('INSTANCE "balancer" MASTER_RX_LOWER_PRI 100', "none Balancer knows"),
        ('INSTANCE "balancer" MASTER', "not a keepalived notice"),
    ],
)
def test_lines_that_are_no_notice_of_ours_are_refused(line: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        role.parse(line)


def test_a_notice_keeps_its_priority() -> None:
    assert role.parse('INSTANCE "balancer" FAULT 150\n') == role.Notice("FAULT", 150)


def replay(log: str, words: list[str], silence: float | None = None) -> list[str]:
    """The reasons of each change to ``words``, with the log read before the first notice, as
    when notices are read late."""
    causes = role.Causes(silence)
    for line in (RECORDED / log).read_text().splitlines():
        causes.feed(line)
    status, reasons = role.initial(0.0), []
    for second, word in enumerate(words, start=1):
        status, change = role.apply(
            status, role.Notice(word, 100), float(second), causes.take(word)
        )
        assert change is not None
        reasons.append(change.after.reason)
    return reasons


def test_the_log_says_a_cut_link_faulted_the_owner_and_the_peer_heard_it_fall_silent() -> None:
    assert replay("link-cut-owner.log", ["BACKUP", "MASTER", "FAULT", "BACKUP", "STOP"]) == [
        "keepalived started; listening for the peer",
        "the peer went silent",
        "link eth0 is down",
        "link eth0 is up again",
        "keepalived stopped",
    ]
    assert replay("link-cut-peer.log", ["BACKUP", "MASTER", "STOP"], 0.6) == [
        "keepalived started; listening for the peer",
        "the peer went silent (no advert for 0.60 s)",
        "keepalived stopped",
    ]


def test_the_log_says_the_engine_stopped_answering() -> None:
    assert replay("engine-death-owner.log", ["BACKUP", "MASTER", "FAULT", "BACKUP"]) == [
        "keepalived started; listening for the peer",
        "the peer went silent",
        "the engine is not answering (its check exited with status 1)",
        "the engine answers again",
    ]


def test_the_log_says_the_peer_gave_the_floating_ips_up() -> None:
    # A priority 0 advert, then the short wait that follows it: the first cause is the one.
    assert replay("stop-peer.log", ["BACKUP", "MASTER"]) == [
        "keepalived started; listening for the peer",
        "the peer gave the floating IPs up",
    ]


def test_the_log_says_a_primary_that_came_back_preempted_the_peer() -> None:
    # Its link cut, then healed, with preemption on: the Secondary's adverts are ignored, and
    # the wait for one runs out after them.
    assert replay("preempt-owner.log", ["BACKUP", "MASTER", "FAULT", "BACKUP", "MASTER"]) == [
        "keepalived started; listening for the peer",
        "the peer went silent",
        "link eth0 is down",
        "link eth0 is up again",
        "preemption: the Active peer (198.18.0.12) has a lower priority (100)",
    ]


def test_the_log_says_why_keepalived_started_in_fault() -> None:
    # A Primary paired before its first commit: its engine runs no revision, the check fails
    # from the start, and keepalived logs no entering of the Fault it starts in.
    assert replay("start-engine-unanswered.log", ["FAULT"]) == [
        "the engine is not answering (its check exited with status 1)"
    ]


def test_without_the_log_having_said_it_the_reason_is_the_tables() -> None:
    causes = role.Causes()
    causes.feed("Fri Dec  4 12:40:28 2026: Netlink reports eth0 down")
    assert causes.take("FAULT") == []  # the notice came before the log's Entering line
    causes.feed("Fri Dec  4 12:40:28 2026: (balancer) Entering FAULT STATE")
    assert causes.take("FAULT") == [(role.Cause.LINK_DOWN, "link eth0 is down")]
    assert causes.take("FAULT") == []  # taken once


def test_follow_reads_the_fifo_across_writers_and_skips_what_is_no_notice(
    tmp_path: Path,
) -> None:
    fifo = tmp_path / "notify"
    os.mkfifo(fifo, 0o600)
    ticks = iter(float(n) for n in range(100))

    async def scenario() -> list[role.Change]:
        changes: list[role.Change] = []

        async def read() -> None:
            async for change in role.follow(fifo, clock=lambda: next(ticks)):
                changes.append(change)
                if len(changes) == 3:
                    return

        reading = asyncio.create_task(read())
        await asyncio.sleep(0.05)
        # Two writers one after the other, as keepalived stopped and started again.
        for text in (
            b'INSTANCE "balancer" BACKUP 100\nnoise\n',
            b'INSTANCE "other" MASTER 100\nINSTANCE "balancer" MASTER 100\n',
        ):
            writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            os.write(writer, text)
            os.close(writer)
        writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        os.write(writer, b'INSTANCE "balancer" STOP 100\n')
        os.close(writer)
        await asyncio.wait_for(reading, 10)
        return changes

    changes = asyncio.run(scenario())
    assert [c.after.word for c in changes] == ["BACKUP", "MASTER", "STOP"]
    assert [c.after.since for c in changes] == [1.0, 2.0, 3.0]
