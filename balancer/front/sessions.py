"""WebUI sessions, held in the daemon's memory: a restarted daemon signs everyone out.

A session is named by a random token that lives in the browser's cookie; the table is keyed by
the token's digest, so not even a memory dump shows a usable cookie. A session ends when it has
not been used for the idle timeout, when it reaches its maximum lifetime however busy it is (a
stolen cookie is not good for ever), when its user signs out, and when its user's password
changes or the user is removed: it remembers the password hash it was opened with.

A local user's role is read from the store at each request, so a change takes effect at once;
a directory user's, which the store does not hold, is the one given at sign-in (``role``).

Forms carry a CSRF token derived from the cookie with a key of this daemon's own (HMAC), so a
page from another site, which cannot read the cookie, cannot make one.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from balancer.roles import Role

# More sessions than any appliance has operators; beyond it the least recently used goes.
MAX_SESSIONS = 10_000


@dataclass(slots=True)
class Session:
    user: str
    password_hash: str | None  # None: a directory user's, whose password is never kept
    role: Role | None  # None: a local user's, read from the store
    opened: float
    last_used: float
    # What the WebUI's last save did, said once on the page it leads to (see web/saved.py).
    saved: str = ""


class Sessions:
    def __init__(
        self, idle_timeout: float, max_lifetime: float, clock: Callable[[], float]
    ) -> None:
        self.idle_timeout = idle_timeout
        self.max_lifetime = max_lifetime
        self._clock = clock
        self._key = secrets.token_bytes(32)
        self._table: dict[str, Session] = {}

    def open(self, user: str, password_hash: str | None, role: Role | None = None) -> str:
        """A new session for ``user``; returns the token for the cookie."""
        now = self._clock()
        for digest in [d for d, s in self._table.items() if self._expired(s, now)]:
            del self._table[digest]
        while len(self._table) >= MAX_SESSIONS:
            oldest = min(self._table, key=lambda d: self._table[d].last_used)
            del self._table[oldest]
        token = secrets.token_urlsafe(32)
        self._table[_digest(token)] = Session(user, password_hash, role, now, now)
        return token

    def find(self, token: str, *, touch: bool) -> Session | None:
        """The live session ``token`` names; ``touch`` counts this as use (a click, not a
        live refresh, so an open System Overview does not keep a session alive for ever)."""
        digest = _digest(token)
        session = self._table.get(digest)
        now = self._clock()
        if session is None or self._expired(session, now):
            self._table.pop(digest, None)
            return None
        if touch:
            session.last_used = now
        return session

    def close(self, token: str) -> None:
        self._table.pop(_digest(token), None)

    def csrf_token(self, cookie: str) -> str:
        return hmac.new(self._key, cookie.encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, cookie: str, token: str) -> bool:
        return hmac.compare_digest(self.csrf_token(cookie), token)

    def _expired(self, session: Session, now: float) -> bool:
        return (
            now - session.last_used >= self.idle_timeout
            or now - session.opened >= self.max_lifetime
        )


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
