"""The second step of signing in: a user whose password was right and who has a second factor
(or whose role must have one) is held here, without a session, until they type a code from
their app or a recovery code (or, if they have none yet, enrol one). Held in the daemon's memory
by a random ticket in the browser's cookie, keyed by its digest as sessions are; a ticket lasts
TICKET_LIFETIME and is good for one user only.

The code is throttled with the password: the password's failure is counted before it is
checked and forgiven only once the second step is passed, so a known password gives no more
guesses at the code than at a password.
"""

from __future__ import annotations

import hashlib
import logging
import math
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool

from balancer import totp
from balancer.front.sessions import Sessions
from balancer.front.throttle import SignInRefused, Throttle
from balancer.store import Store

log = logging.getLogger("balancer.access")

SECOND_STEP_COOKIE = "balancer_second_step"
TICKET_LIFETIME = 300.0  # seconds to find the phone and type the code
MAX_TICKETS = 10_000


@dataclass(frozen=True, slots=True)
class Ticket:
    user: str
    password_hash: str  # what the session is opened with, as a one-step sign-in's is
    address: str
    enrol: bool  # no second factor yet, and the user's role must have one
    opened: float


class SecondStep(Exception):
    """The password was right; the session waits for the second step, named by ``ticket``."""

    def __init__(self, ticket: str, enrol: bool) -> None:
        super().__init__("a second factor is needed")
        self.ticket = ticket
        self.enrol = enrol


class SecondFactor:
    def __init__(
        self, store: Store, sessions: Sessions, throttle: Throttle, clock: Callable[[], float]
    ) -> None:
        self.store = store
        self.sessions = sessions
        self.throttle = throttle
        self._clock = clock
        self._tickets: dict[str, Ticket] = {}

    def needed(self, user: str, password_hash: str, address: str) -> SecondStep | None:
        """The second step ``user`` must pass before a session, if any."""
        enrolled = self.store.two_factor(user) is not None
        if not enrolled and self.store.role(user) not in self.store.two_factor_required():
            return None
        now = self._clock()
        for digest in [d for d, t in self._tickets.items() if self._expired(t, now)]:
            del self._tickets[digest]
        while len(self._tickets) >= MAX_TICKETS:
            del self._tickets[min(self._tickets, key=lambda d: self._tickets[d].opened)]
        ticket = secrets.token_urlsafe(32)
        self._tickets[_digest(ticket)] = Ticket(user, password_hash, address, not enrolled, now)
        return SecondStep(ticket, not enrolled)

    def find(self, ticket: str) -> Ticket | None:
        found = self._tickets.get(_digest(ticket))
        if found is None or self._expired(found, self._clock()):
            self._tickets.pop(_digest(ticket), None)
            return None
        return found

    def drop(self, ticket: str) -> None:
        self._tickets.pop(_digest(ticket), None)

    async def verify(self, ticket: str, code: str, address: str) -> str:
        """A session's token once ``code`` is the ticket's user's second factor; else
        SignInRefused (the throttle counts it as a wrong password)."""
        found = self._live(ticket)
        keys = (f"address {address}", f"user {found.user}")
        self._throttled(keys, found.user, address)
        delay = self.throttle.failed(*keys)
        used = await run_in_threadpool(totp.check, self.store, found.user, code, self.store.now())
        context = {"user": found.user, "address": address}
        if used is None:
            log.warning("second factor refused", extra={**context, "delay": delay})
            self.store.audit(
                author=found.user, action="sign_in_failed", detail={"address": address}
            )
            message = "That code is wrong, or was used already."
            if delay > 0:
                message += f" Wait {math.ceil(delay)} s before trying again."
            raise SignInRefused(message, delay)
        return self._open(ticket, found, address, used)

    async def enrol(
        self, ticket: str, secret: str, code: str, address: str
    ) -> tuple[str, list[str]]:
        """A session's token and the new recovery codes, once ``code`` shows the ticket's user's
        app holds ``secret``; Invalid naming ``code`` otherwise (counted by the throttle)."""
        found = self._live(ticket)
        if not found.enrol:
            raise SignInRefused("Sign in again: this sign-in asks for a code.", 0)
        keys = (f"address {address}", f"user {found.user}")
        self._throttled(keys, found.user, address)
        self.throttle.failed(*keys)
        user = found.user
        codes = totp.enrol(self.store, user, secret, code, self.store.now(), author=user)
        return self._open(ticket, found, address, "enrolled"), codes

    def _live(self, ticket: str) -> Ticket:
        found = self.find(ticket)
        if found is None:
            raise SignInRefused("That sign-in has expired: sign in again.", 0)
        return found

    def _throttled(self, keys: tuple[str, ...], user: str, address: str) -> None:
        wait = self.throttle.wait(*keys)
        if wait > 0:
            context = {"user": user, "address": address, "wait": wait}
            log.warning("second factor refused: too many failures", extra=context)
            message = f"Too many failed sign-ins: try again in {math.ceil(wait)} s."
            raise SignInRefused(message, wait, throttled=True)

    def _open(self, ticket: str, found: Ticket, address: str, how: str) -> str:
        self.drop(ticket)
        self.throttle.succeeded(f"address {address}", f"user {found.user}")
        detail = {"address": address, "second_factor": how}
        self.store.audit(author=found.user, action="sign_in", detail=detail)
        log.info("signed in", extra={"user": found.user, "address": address})
        return self.sessions.open(found.user, found.password_hash)

    def _expired(self, ticket: Ticket, now: float) -> bool:
        return now - ticket.opened >= TICKET_LIFETIME


def _digest(ticket: str) -> str:
    return hashlib.sha256(ticket.encode()).hexdigest()
