"""The event stream: every subscriber sees every event in order; a slow one is told what it lost."""

from __future__ import annotations

import asyncio

from balancer import events
from balancer.events import (
    EngineChanged,
    HealthChanged,
    Missed,
    OperatorAction,
    RevisionApplied,
    SplitBrain,
    Stream,
)


def test_every_subscriber_gets_every_event_in_order() -> None:
    stream = Stream()
    first, second = stream.subscribe(), stream.subscribe()
    published = [RevisionApplied(n, "admin", float(n)) for n in range(5)]
    for event in published:
        stream.publish(event)
    assert first.pending() == published
    assert second.pending() == published
    assert first.pending() == []


def test_a_closed_subscription_gets_nothing_more() -> None:
    stream = Stream()
    with stream.subscribe() as gone:
        pass
    kept = stream.subscribe()
    stream.publish(EngineChanged(None, 1.0))
    assert gone.pending() == []
    assert kept.pending() == [EngineChanged(None, 1.0)]


def test_a_subscriber_that_falls_behind_is_told_how_many_it_missed() -> None:
    stream = Stream()
    slow = stream.subscribe()
    total = events.QUEUE + 7
    for n in range(total):
        stream.publish(RevisionApplied(n, "admin", 0.0))
    got = slow.pending()
    assert got[0] == Missed(7)
    assert got[1:] == [RevisionApplied(n, "admin", 0.0) for n in range(7, total)]


def test_a_reader_waits_for_the_next_event() -> None:
    async def scenario() -> list[object]:
        stream = Stream()
        seen: list[object] = []

        async def read() -> None:
            with stream.subscribe() as subscription:
                async for event in subscription:
                    seen.append(event)
                    if len(seen) == 2:
                        return

        reader = asyncio.create_task(read())
        await asyncio.sleep(0)  # the reader subscribes and waits
        stream.publish(HealthChanged("PSM", "PSM1", "down", "connection refused", 1.0))
        await asyncio.sleep(0)
        stream.publish(HealthChanged("PSM", "PSM1", "up", "connected", 2.0))
        await asyncio.wait_for(reader, 5)
        assert not stream._subscribers  # leaving the ``with`` unsubscribed it
        return seen

    assert asyncio.run(scenario()) == [
        HealthChanged("PSM", "PSM1", "down", "connection refused", 1.0),
        HealthChanged("PSM", "PSM1", "up", "connected", 2.0),
    ]


def test_each_event_reads_as_one_log_line_with_its_kind_and_fields() -> None:
    down = HealthChanged("CyberArk-PSM", "PSM1", "down", "connect failed: timed out", 5.0)
    assert events.kind(down) == "health_changed"
    assert (
        events.said(down) == "real server PSM1 of CyberArk-PSM is down: connect failed: timed out"
    )
    assert events.fields(down)["server"] == "PSM1"
    drain = OperatorAction("drain", "CyberArk-PSM", "PSM1", "admin", 6.0)
    assert (events.kind(drain), events.said(drain)) == (
        "operator_action",
        "admin: drain real server PSM1 of CyberArk-PSM",
    )
    assert events.said(RevisionApplied(7, "admin", 0.0)) == "revision 7 applied by admin"
    assert events.said(EngineChanged("port 3389 in use", 0.0)) == "engine: port 3389 in use"
    assert events.kind(Missed(3)) == "missed"
    raised = SplitBrain(True, 9.0, ("the peer says it is Active too",), 10.0)
    assert events.kind(raised) == "split_brain"
    assert events.kind(SplitBrain(False, 9.0, (), 12.0)) == "split_brain_resolved"


def test_a_publish_from_a_worker_thread_is_queued_at_once_and_wakes_the_reader() -> None:
    """A synchronous route saves in a worker thread and may read the Commit box right after."""
    event = EngineChanged(None, 1.0)

    async def scenario() -> None:
        stream = Stream()
        with stream.subscribe() as waiting, stream.subscribe() as looked_at:
            reader = asyncio.create_task(waiting.next())
            await asyncio.sleep(0)  # the reader waits

            def publish_and_look() -> list[object]:
                stream.publish(event)
                return list(looked_at.pending())

            assert await asyncio.to_thread(publish_and_look) == [event]
            assert await asyncio.wait_for(reader, 5) == event

    asyncio.run(scenario())
