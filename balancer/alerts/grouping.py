"""Grouping, so that one flapping real server cannot send a hundred messages: of the alerts
with one key, the first is sent at once and opens a window; those that follow within it are
folded into one message sent when it closes, saying the latest and how many were folded. Pure:
the time comes from the caller."""

from __future__ import annotations

from dataclasses import dataclass

from balancer.alerts.rules import Alert

WINDOW = 300.0  # seconds


@dataclass(frozen=True, slots=True)
class Message:
    alert: Alert
    folded: int = 1  # alerts with this key since the last message, this one included

    def text(self) -> str:
        if self.folded <= 1:
            return self.alert.summary
        return f"{self.alert.summary} ({self.folded} changes since the last message)"


@dataclass(slots=True)
class _Window:
    closes: float
    latest: Alert | None = None
    folded: int = 0


class Grouper:
    def __init__(self, window: float = WINDOW) -> None:
        self.window = window
        self._open: dict[str, _Window] = {}

    def offer(self, alert: Alert, now: float) -> list[Message]:
        """The message to send now: the alert itself (with what its key's closed window had
        folded), unless its key's window is open."""
        window = self._open.get(alert.key)
        if window is None or now >= window.closes:
            self._open[alert.key] = _Window(now + self.window)
            return [Message(alert, 1 + (window.folded if window is not None else 0))]
        window.latest = alert
        window.folded += 1
        return []

    def due(self, now: float) -> list[Message]:
        """The folded messages whose window has closed; each opens the next window, so that a
        server flapping on sends one message a window."""
        sent: list[Message] = []
        for key, window in list(self._open.items()):
            if now < window.closes:
                continue
            if window.latest is None:
                del self._open[key]
                continue
            sent.append(Message(window.latest, window.folded))
            self._open[key] = _Window(now + self.window)
        return sent

    def next_due(self) -> float | None:
        """When ``due`` may have something to send next; None while no window is open."""
        return min((window.closes for window in self._open.values()), default=None)
