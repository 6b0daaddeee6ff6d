"""The daemon's alerts task: it reads the node's event stream, turns events into alerts
(``rules``), groups them (``grouping``) and sends each message to every channel, each send a
task of its own that tries again with back-off (``send.deliver``), so that a slow or failing
channel delays neither the others nor the next event."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from balancer import events
from balancer.alerts import channels, send
from balancer.alerts.grouping import WINDOW, Grouper, Message
from balancer.alerts.rules import Alert, Watch
from balancer.model import Config
from balancer.store import Store

log = logging.getLogger("balancer.alerts")

# Sends under way at most: beyond it a message is dropped and logged, not queued without end.
MAX_SENDING = 64


def running(store: Store) -> Config:
    """The configuration the data plane runs: where a service's real servers are found."""
    applied = store.applied()
    return Config() if applied is None else store.revision(applied.revision).config


async def run(
    subscription: events.Subscription,
    store: Store,
    *,
    clock: Callable[[], float] = time.time,
    window: float = WINDOW,
    waits: list[float] | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Until cancelled; the sends under way are cancelled with it."""
    watch, grouper = Watch(), Grouper(window)
    waits = send.delays() if waits is None else waits
    sending: set[asyncio.Task[None]] = set()
    try:
        while True:
            due = grouper.next_due()
            try:
                event = await asyncio.wait_for(
                    subscription.next(), None if due is None else max(0.0, due - clock())
                )
            except TimeoutError:
                event = None
            now = clock()
            messages = grouper.due(now)
            try:
                if event is not None:
                    for alert in watch.see(event, running(store)):
                        messages += grouper.offer(alert, now)
                targets = channels.channels(store)
            except Exception as error:  # the alerts must outlive a store that failed once
                log.error("alerts: %s", error, extra={"event": "alert_failed"})
                continue
            for message in messages:
                for channel in targets:
                    if len(sending) >= MAX_SENDING:
                        log.warning(
                            "alert not sent to %s: %d sends are under way",
                            channel.name,
                            len(sending),
                            extra={"event": "alert_dropped", "channel": channel.name},
                        )
                        continue
                    task = asyncio.create_task(_deliver(channel, message, store, waits, sleep))
                    sending.add(task)
                    task.add_done_callback(sending.discard)
    finally:
        subscription.close()
        for task in sending:
            task.cancel()


async def _deliver(
    channel: channels.Channel,
    message: Message,
    store: Store,
    waits: list[float],
    sleep: Callable[[float], Awaitable[None]],
) -> None:
    node = store.node_settings().hostname
    failure = await send.deliver(lambda: send.send(channel, message, node), waits, sleep)
    fields = {"channel": channel.name, "alert": message.alert.kind, "key": message.alert.key}
    if failure is None:
        log.info(
            "alert sent to %s: %s",
            channel.name,
            message.text(),
            extra={"event": "alert_sent", **fields},
        )
    else:
        log.warning(
            "alert not sent to %s after %d tries: %s",
            channel.name,
            len(waits) + 1,
            failure,
            extra={"event": "alert_failed", **fields},
        )


async def test(channel: channels.Channel, node: str) -> None:
    """Send Test: one message, one try, now; ``send.SendFailed`` says why it was not sent."""
    alert = Alert("test", "test", "info", f"test alert from {node or 'Balancer'}", time.time())
    await send.send(channel, Message(alert), node)
