"""Who is calling: the signed-in user of a WebUI session, the owner of an API key, or, on the
Unix socket only, the local OS user. And signing in, throttled and logged."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

from balancer import directory, users
from balancer.front.sessions import Sessions
from balancer.front.throttle import SignInRefused, Throttle
from balancer.front.two_factor import SecondFactor
from balancer.roles import Role
from balancer.store import Store

log = logging.getLogger("balancer.access")

SESSION_COOKIE = "balancer_session"
# A sign-in form's CSRF token is made from this cookie, as a session's is from its cookie.
SIGN_IN_COOKIE = "balancer_sign_in"


@dataclass(frozen=True, slots=True)
class Caller:
    user: str  # the author of whatever this caller changes
    via: Literal["local", "session", "key", "peer"]
    session: str | None = None  # the session's token, when signed in through the WebUI
    # What this caller may do (balancer.roles), as it stands at this request.
    role: Role = field(kw_only=True)


class Access:
    def __init__(
        self,
        store: Store,
        *,
        idle_timeout: float,
        max_lifetime: float,
        clock: Callable[[], float],
    ) -> None:
        self.store = store
        self.sessions = Sessions(idle_timeout, max_lifetime, clock)
        self.throttle = Throttle(clock)
        self.two_factor = SecondFactor(store, self.sessions, self.throttle, clock)

    def caller(self, connection: HTTPConnection, *, touch: bool) -> Caller | None:
        """Who sent this request over the network: an API key, else a session cookie."""
        scheme, _, key = connection.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and key:
            found = self.store.api_key_caller(users.key_digest(key.strip()))
            return Caller(found[0], "key", role=found[1]) if found else None
        token = connection.cookies.get(SESSION_COOKIE)
        if not token:
            return None
        session = self.sessions.find(token, touch=touch)
        if session is None:
            return None
        # A local user's password changed, or the user was removed; or a local user of a
        # directory user's name was added, who wins.
        if self.store.password_hash(session.user) != session.password_hash:
            self.sessions.close(token)
            return None
        role = session.role or self.store.role(session.user)
        if role is None:  # removed between the two questions
            self.sessions.close(token)
            return None
        return Caller(session.user, "session", token, role=role)

    async def sign_in(self, name: str, password: str, address: str) -> str:
        """A new session's token, or SignInRefused; or SecondStep, when a local user must pass
        a second factor first (front/two_factor.py).

        A local user's session opens with ``sessions.open(name, hash)``: their role is read
        from the store at each request. A directory user's opens with
        ``sessions.open(name, None, role)``, the role their groups map to, kept for the
        session's life."""
        name = name[:64]  # longer than any user name; it goes into logs and the throttle's table
        keys = (f"address {address}", f"user {name}")
        wait = self.throttle.wait(*keys)
        context = {"user": name, "address": address}
        if wait > 0:
            log.warning("sign-in refused: too many failures", extra={**context, "wait": wait})
            message = f"Too many failed sign-ins: try again in {math.ceil(wait)} s."
            raise SignInRefused(message, wait, throttled=True)
        # Counted before the check, so attempts made in parallel are each counted.
        delay = self.throttle.failed(*keys)
        found = await run_in_threadpool(users.verify, self.store, name, password)
        refused: dict[str, str] = {}
        if found is None and self.store.password_hash(name) is None:
            # Not a local user, who always wins: a directory's user, if one is set up. Their
            # password goes to the directory only; their role is their groups'.
            try:
                accepted = await run_in_threadpool(directory.ask, self.store, name, password)
            except directory.Refused as error:
                refused = {"directory": error.reason, "reason": str(error)}
                if error.reason == "two_factor":  # the password was right: say what is wrong
                    log.warning("sign-in refused", extra={**context, **refused})
                    detail = {"address": address, **refused}
                    self.store.audit(author=name, action="sign_in_failed", detail=detail)
                    raise SignInRefused(f"Not signed in: {error}.", delay) from None
            else:
                if accepted is not None:
                    self.throttle.succeeded(*keys)
                    detail = {"address": address, "directory": accepted.role}
                    self.store.audit(author=accepted.name, action="sign_in", detail=detail)
                    log.info("signed in", extra={**context, **detail, "user": accepted.name})
                    return self.sessions.open(accepted.name, None, accepted.role)
        if found is None:
            log.warning("sign-in failed", extra={**context, **refused, "delay": delay})
            detail = {"address": address, **refused}
            self.store.audit(author=name, action="sign_in_failed", detail=detail)
            message = "Wrong user name or password."
            if delay > 0:
                message += f" Wait {math.ceil(delay)} s before trying again."
            raise SignInRefused(message, delay)
        # A local user with a second factor, or whose role must have one: no session yet, and
        # the failure counted stays until the second step is passed (front/two_factor.py).
        second = self.two_factor.needed(name, found, address)
        if second is not None:
            log.info("password right: second factor asked", extra=context)
            raise second
        self.throttle.succeeded(*keys)
        self.store.audit(author=name, action="sign_in", detail={"address": address})
        log.info("signed in", extra=context)
        return self.sessions.open(name, found)

    def sign_out(self, caller: Caller) -> None:
        if caller.session is not None:
            self.sessions.close(caller.session)
            self.store.audit(author=caller.user, action="sign_out")


def set_cookie(response: Response, request: Request, name: str, value: str, path: str) -> None:
    """A cookie only this site's own requests carry, and no script can read. It has no expiry:
    the browser drops it when closed, and the appliance when the session is idle."""
    response.set_cookie(
        name,
        value,
        path=path,
        httponly=True,
        samesite="strict",
        # Secure wherever the page came over HTTPS; on the plain HTTP listener a Secure
        # cookie would never come back, and nobody could sign in there.
        secure=request.url.scheme == "https",
    )
