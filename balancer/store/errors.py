"""What the store refuses, and why."""

from __future__ import annotations


class StoreError(Exception):
    """The store cannot do what was asked."""


class Conflict(StoreError):
    """The change was made on a revision that is no longer the head: someone else saved first."""


class NotFound(StoreError):
    """No such revision."""


class Mismatch(StoreError):
    """A revision received from the owning node does not have the digest it came with."""
