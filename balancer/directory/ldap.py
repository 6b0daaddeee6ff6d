"""Signing in against LDAP or Active Directory (ldap3): plain LDAP, LDAPS, or StartTLS.

The search account finds the user's entry with the user filter; a second connection binds as
that entry with the password typed (the directory checks it; Balancer keeps nothing); the
search account then finds the user's groups: Active Directory in one search with its in-chain
rule, any other directory group by group up to WALK_DEPTH levels. Servers are tried in order;
the next is asked only when one cannot be reached or its certificate is not trusted.

Blocking: called off the event loop."""

from __future__ import annotations

import contextlib
import math
import ssl
from collections import deque

from ldap3 import SUBTREE, Connection, Server, Tls
from ldap3.core.exceptions import LDAPException, LDAPStartTLSError

from balancer.directory.outcome import Accepted, Refused
from balancer.directory.settings import (
    WALK_DEPTH,
    WALK_GROUPS,
    Name,
    Settings,
    in_chain_filter,
    member_filter,
    role_of,
    user_filter,
)

# A password the directory would take as an unauthenticated bind (RFC 4513 5.1.2): refused
# before anything is sent.
_EMPTY = "an empty password"


def sign_in(settings: Settings, name: str, password: str, secret: str) -> Accepted:
    """The user ``name`` signed in with ``password``, or Refused naming why."""
    typed = Name.of(name.strip(), settings.domain)
    if not typed.user:
        raise Refused("not_found", "no user name was given")
    if not password:
        raise Refused("password", f"{typed.typed}: {_EMPTY} is never sent to the directory")
    search, server = _connect(settings, settings.bind_dn, secret)
    try:
        dn, account = _find(search, settings, typed)
        _check_password(settings, server, dn, password)
        groups = _groups(search, settings, dn)
    except LDAPException as error:
        lost = " ".join(str(error).split())
        raise Refused(
            "unreachable", f"{server.host}:{server.port}: connection lost: {lost}"
        ) from None
    finally:
        _close(search)
    role = role_of(settings, groups)
    if role is None:
        listed = ", ".join(groups) or "none"
        raise Refused("group", f"{dn} is in no group mapped to a role (its groups: {listed})")
    return Accepted(account or typed.user, role, tuple(groups))


def reach(settings: Settings, secret: str) -> str:
    """Which server answered and took the search account's bind, or Refused."""
    connection, server = _connect(settings, settings.bind_dn, secret)
    _close(connection)
    return f"{server.host}:{server.port}"


class _Tls(Tls):  # type: ignore[misc]  # ldap3 has no types
    """TLS with Python's own checks of the certificate and its name (ldap3's name check calls
    ssl.match_hostname, deprecated): the CA set here, or the system's when none is."""

    def __init__(self, ca_certificate: str) -> None:
        super().__init__(validate=ssl.CERT_REQUIRED)
        self.context = ssl.create_default_context(cadata=ca_certificate or None)

    def wrap_socket(self, connection: Connection, do_handshake: bool = False) -> None:
        connection.socket = self.context.wrap_socket(
            connection.socket,
            server_hostname=connection.server.host,
            do_handshake_on_connect=do_handshake,
        )


def _servers(settings: Settings) -> list[Server]:
    tls = _Tls(settings.ca_certificate)
    return [
        Server(
            host,
            port=port,
            use_ssl=settings.kind == "ldaps",
            tls=tls if settings.kind != "ldap" else None,
            connect_timeout=settings.timeout,
            get_info=None,
        )
        for host, port in settings.addresses()
    ]


def _connect(settings: Settings, dn: str, password: str) -> tuple[Connection, Server]:
    """A connection bound as ``dn`` on the first server that answers with a trusted
    certificate; Refused with the last server's reason when none does."""
    refused: Refused | None = None
    for server in _servers(settings):
        try:
            return _bind(settings, server, dn, password), server
        except Refused as error:
            if error.reason not in ("unreachable", "certificate"):
                raise
            refused = error
    assert refused is not None  # there is at least one server
    raise refused


def _bind(settings: Settings, server: Server, dn: str, password: str) -> Connection:
    where = f"{server.host}:{server.port}"
    connection = Connection(
        server,
        user=dn or None,
        password=password or None,
        receive_timeout=math.ceil(settings.timeout),  # ldap3 packs it as whole seconds
        auto_referrals=False,
        raise_exceptions=False,
        read_only=True,
    )
    try:
        connection.open()
        if settings.kind == "starttls" and not connection.start_tls():
            raise Refused("unreachable", f"{where}: StartTLS refused: {_said(connection)}")
        bound = connection.bind()
    except LDAPStartTLSError as error:
        _close(connection)
        raise _refusal(where, error, starttls=True) from None
    except LDAPException as error:
        _close(connection)
        raise _refusal(where, error) from None
    except Refused:
        _close(connection)
        raise
    if not bound:
        _close(connection)
        account = f"the search account {dn}" if dn else "an anonymous bind"
        raise Refused("bind", f"{where}: {account} was refused: {_said(connection)}")
    return connection


def _close(connection: Connection) -> None:
    """Unbind, and close the socket whatever state a failure left it in."""
    with contextlib.suppress(LDAPException, OSError):
        connection.unbind()
    if connection.socket is not None:
        with contextlib.suppress(OSError):
            connection.socket.close()


def _refusal(where: str, error: Exception, *, starttls: bool = False) -> Refused:
    text = " ".join(str(error).split())
    if "certificate" in text.lower() or "hostname" in text.lower():
        return Refused(
            "certificate",
            f"{where}: the server's certificate is not trusted "
            f"(check the CA certificate set here): {text}",
        )
    if starttls:
        return Refused("unreachable", f"{where}: StartTLS failed: {text}")
    return Refused("unreachable", f"{where}: cannot reach the server: {text}")


def _said(connection: Connection) -> str:
    result = connection.result or {}
    message = str(result.get("message") or "").strip()
    described = str(result.get("description") or "no answer")
    return f"{described} ({message})" if message else described


def _find(search: Connection, settings: Settings, name: Name) -> tuple[str, str]:
    """The DN of ``name``'s entry and the account's name there."""
    query = user_filter(settings, name)
    search.search(
        settings.base_dn,
        query,
        SUBTREE,
        attributes=["sAMAccountName", "uid"],
        size_limit=2,
        time_limit=max(1, int(settings.timeout)),
    )
    found = [entry for entry in search.response or [] if entry.get("type") == "searchResEntry"]
    if not found:
        raise Refused("not_found", f"no user {name.typed} under {settings.base_dn} ({query})")
    if len(found) > 1:
        raise Refused("not_found", f"{name.typed}: more than one entry matches {query}")
    attributes = found[0].get("attributes", {})
    account = next(
        (_one(attributes.get(a)) for a in ("sAMAccountName", "uid") if attributes.get(a)), ""
    )
    return str(found[0]["dn"]), account


def _one(value: object) -> str:
    if isinstance(value, list | tuple):
        return str(value[0]) if value else ""
    return str(value)


def _check_password(settings: Settings, server: Server, dn: str, password: str) -> None:
    try:
        user = _bind(settings, server, dn, password)
    except Refused as error:
        if error.reason != "bind":
            raise
        raise Refused("password", f"{dn}: the directory refused the password") from None
    _close(user)


def _groups(search: Connection, settings: Settings, dn: str) -> list[str]:
    """The DNs of the groups ``dn`` is a member of, directly or through nested groups."""
    attribute = settings.member_attribute
    if settings.nested_groups == "active_directory":
        return _search_dns(search, settings, in_chain_filter(attribute, dn))
    found: list[str] = []
    seen = {dn.lower()}
    queue = deque([(dn, 0)])
    while queue and len(found) < WALK_GROUPS:
        member, depth = queue.popleft()
        for group in _search_dns(search, settings, member_filter(attribute, member)):
            if group.lower() in seen:
                continue  # groups in a loop
            seen.add(group.lower())
            found.append(group)
            if depth + 1 < WALK_DEPTH and settings.nested_groups == "walk":
                queue.append((group, depth + 1))
    return found[:WALK_GROUPS]


def _search_dns(search: Connection, settings: Settings, query: str) -> list[str]:
    search.search(
        settings.base_dn,
        query,
        SUBTREE,
        attributes=[],
        size_limit=WALK_GROUPS,
        time_limit=max(1, int(settings.timeout)),
    )
    return [
        str(entry["dn"]) for entry in search.response or [] if entry.get("type") == "searchResEntry"
    ]
