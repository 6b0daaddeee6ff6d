"""Directory sign-in (Local Configuration > Remote Authentication): a user who is not a local
user signs in against LDAP, Active Directory or RADIUS, with the role their groups map to.

Node-local (each node of an HA pair has its own), kept in the store's ``directory`` table; the
secret (the search account's password, RADIUS's shared secret) apart from the settings, taken
and never given back ("secret": "set"). A directory user's password is only passed on to the
directory, never kept nor logged.

``authenticate`` and ``test`` block (sockets): the HTTP front calls them off the event loop."""

from __future__ import annotations

from typing import Any

from balancer import validate
from balancer.directory import ldap, radius
from balancer.directory.outcome import Accepted, Reason, Refused
from balancer.directory.settings import Settings
from balancer.store import Store

__all__ = [
    "Accepted",
    "Reason",
    "Refused",
    "Settings",
    "ask",
    "authenticate",
    "configured",
    "test",
]


def configured(store: Store) -> tuple[Settings, str] | None:
    """The settings and the secret, or None when directory sign-in is off."""
    found = store.directory()
    if found is None:
        return None
    settings, secret = found
    return Settings.model_validate(settings), secret


def shown(store: Store) -> dict[str, Any]:
    """What an answer says of the settings: never the secret, only whether one is set."""
    found = configured(store)
    if found is None:
        return {"enabled": False}
    settings, secret = found
    return {
        "enabled": True,
        **settings.model_dump(mode="json"),
        "secret": "set" if secret else None,
    }


def save(store: Store, body: dict[str, Any] | None, secret: str | None, *, author: str) -> None:
    """Check and save the settings (None: directory sign-in off); a ``secret`` of None or ''
    keeps the saved one. Invalid names each field and its reason."""
    if body is None:
        store.save_directory(None, None, author=author)
        return
    checked = validate.parse_as(Settings, body)
    store.save_directory(checked.model_dump(mode="json"), secret or None, author=author)


def ask(store: Store, name: str, password: str) -> Accepted | None:
    """Sign ``name`` in against the directory set up here: None when none is, Refused when
    the directory says no, or when the account's name is a local user's (who always wins)."""
    found = configured(store)
    if found is None:
        return None
    settings, secret = found
    accepted = authenticate(settings, secret, name, password)
    if store.password_hash(accepted.name) is not None:
        raise Refused(
            "local", f"{accepted.name} is a local user's name: only the local user signs in so"
        )
    # A role that must have a second factor is not let in on an LDAP password alone. RADIUS
    # is trusted with it: RADIUS servers are where one-time passwords usually live (the
    # token's code typed after the password, or in its place).
    if settings.kind != "radius" and accepted.role in store.two_factor_required():
        raise Refused(
            "two_factor",
            f"the {accepted.role} role must sign in with a second factor, which directory "
            "users have only through RADIUS: sign in with a local account",
        )
    return accepted


def authenticate(settings: Settings, secret: str, name: str, password: str) -> Accepted:
    """``name`` signed in with ``password``, or Refused naming why."""
    if settings.kind == "radius":
        return radius.sign_in(settings, name, password, secret)
    return ldap.sign_in(settings, name, password, secret)


def test(settings: Settings, secret: str, name: str, password: str) -> str:
    """One line saying what works, or Refused naming exactly what failed. Without a name, an
    LDAP directory is only reached and bound with the search account."""
    if not name:
        if settings.kind == "radius":
            raise Refused("not_found", "RADIUS is tested with a user name and password")
        where = ldap.reach(settings, secret)
        account = settings.bind_dn or "an anonymous bind"
        return f"{where} answered and took {account}"
    accepted = authenticate(settings, secret, name, password)
    groups = ", ".join(accepted.groups) or "none"
    return f"{accepted.name} signs in as {accepted.role} (groups: {groups})"
