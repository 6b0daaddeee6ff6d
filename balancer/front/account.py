"""A signed-in user's own account: changing their own password, whatever their role.

The current password is asked first: a session left open on a shared screen, or a leaked API
key, must not be enough to take the account. A wrong one counts in the sign-in throttle, under
the caller's address and name, so guessing it here is no faster than on the sign-in page. The
change ends the user's other WebUI sessions (each remembers the password hash it was opened
with, front/access.py) and keeps the caller's own; the store audits it.
"""

from __future__ import annotations

import logging
import math

from starlette.concurrency import run_in_threadpool

from balancer import users
from balancer.front.access import Access, Caller
from balancer.validate import Invalid, Problem

log = logging.getLogger("balancer.access")


def is_local(access: Access, caller: Caller) -> bool:
    """Whether the caller is a local user, with a password kept here: a directory user's is
    changed in the directory."""
    return access.store.password_hash(caller.user) is not None


async def change_password(
    access: Access, caller: Caller, current: str, new: str, address: str
) -> None:
    """Set ``caller``'s own password to ``new``, given their ``current`` one; Invalid naming
    the field and the reason otherwise."""
    name = caller.user
    if not is_local(access, caller):
        if caller.via == "session":
            reason = f"{name} signs in with the directory: the password is changed there, not here"
        else:  # the Unix socket's OS user, whom no user of the WebUI need be named after
            reason = f"{name} is no user of the WebUI and the API: see balancer user passwd"
        raise Invalid([Problem("user", reason)])
    # Checked before the current password, which alone is worth guessing.
    users.check_password(new, name)
    keys = (f"address {address}", f"user {name}")
    wait = access.throttle.wait(*keys)
    if wait > 0:
        reason = f"too many wrong passwords: try again in {math.ceil(wait)} s"
        raise Invalid([Problem("current", reason)])
    # Counted before the check, so attempts made in parallel are each counted.
    access.throttle.failed(*keys)
    if await run_in_threadpool(users.verify, access.store, name, current) is None:
        log.warning("password not changed: wrong current password", extra={"user": name})
        detail = {"address": address, "via": caller.via}
        access.store.audit(author=name, action="password_refused", target=name, detail=detail)
        raise Invalid([Problem("current", "is not your current password")])
    access.throttle.succeeded(*keys)
    digest = await run_in_threadpool(users.hash_password, new, name)
    # Nothing is awaited from here on, so no request of the caller's session is checked
    # between the new hash in the store and the same hash in the session.
    access.store.set_password(name, digest, author=name)
    session = access.sessions.find(caller.session, touch=False) if caller.session else None
    if session is not None:
        session.password_hash = digest
    log.info("password changed by its user", extra={"user": name, "via": caller.via})
