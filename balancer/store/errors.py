"""What the store refuses, and why."""

from __future__ import annotations

from balancer.validate import Invalid, Problem


class StoreError(Exception):
    """The store cannot do what was asked."""


class Conflict(StoreError):
    """The change was made on a revision that is no longer the head: someone else saved first."""


class NotFound(StoreError):
    """No such revision."""


class Mismatch(StoreError):
    """A revision received from the owning node does not have the digest it came with."""


class ReadOnly(Invalid):
    """An edit of what an HA pair shares (the configuration, users, API keys) on its Secondary,
    refused in ``ha.sync.refuse_edit``'s one line naming the Primary; nothing is changed."""

    def __init__(self, line: str) -> None:
        super().__init__([Problem("", line)])
