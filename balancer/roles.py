"""Who may do what: the three roles, and the one table of the least role each route, WebUI page
and action, and command needs.

A role is a user's (``user.role``), or a narrower one an API key carries (``api_key.role``), or
a directory group's, given at sign-in and kept in the session. The Unix socket's caller (root)
is an administrator.
"""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    """Ordered: each role may do what the ones before it may."""

    VIEWER = "viewer"  # reads everything but secrets; changes nothing
    OPERATOR = "operator"  # and drains, halts and brings online, commits what others saved
    ADMINISTRATOR = "administrator"  # everything

    @property
    def rank(self) -> int:
        return _ORDER.index(self)

    def __lt__(self, other: str) -> bool:
        return self.rank < Role(other).rank

    def __le__(self, other: str) -> bool:
        return self.rank <= Role(other).rank

    def __gt__(self, other: str) -> bool:
        return self.rank > Role(other).rank

    def __ge__(self, other: str) -> bool:
        return self.rank >= Role(other).rank


_ORDER = tuple(Role)


def narrower(first: Role, second: Role | None) -> Role:
    """The role that may do less: an API key's and its owner's (None: the owner's own)."""
    return first if second is None else min(first, second)
