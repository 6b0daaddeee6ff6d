"""What asking a directory comes to: a user signed in with a role, or refused for one reason."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from balancer.roles import Role

# unreachable: no server answered; certificate: a server's certificate is not trusted; bind:
# the search account was refused; not_found: no such user (or more than one); password: the
# user's password was refused; group: in no group mapped to a role; local: the account's name
# is a local user's, who alone signs in with it; two_factor: the password was right, but the
# role the groups give must have a second factor, which an LDAP directory does not give.
Reason = Literal[
    "unreachable", "certificate", "bind", "not_found", "password", "group", "local", "two_factor"
]


class Refused(Exception):
    """Not signed in, for ``reason``; the message is one line for the administrator (never
    shown to the user signing in, who is told only that the name or password is wrong; but
    for ``two_factor``, said once the password was right)."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Accepted:
    name: str  # the account's name in the directory, the author of what the user changes
    role: Role
    groups: tuple[str, ...]  # LDAP: the groups' DNs; RADIUS: the reply attribute's values
