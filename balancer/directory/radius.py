"""Signing in against RADIUS (pyrad): PAP in an Access-Request that carries a
Message-Authenticator, whose reply must carry one too (the BlastRADIUS countermeasure,
CVE-2024-3596). The role comes from the Access-Accept's Filter-Id or Class, mapped like LDAP
groups, or is the default role.

Blocking: called off the event loop."""

from __future__ import annotations

import io

from pyrad import packet
from pyrad.client import Client, Timeout
from pyrad.dictionary import Dictionary

from balancer.directory.outcome import Accepted, Refused
from balancer.directory.settings import Settings, role_of

# The attributes Balancer sends and reads: RFC 2865's, and RFC 3579's Message-Authenticator.
_DICTIONARY = """\
ATTRIBUTE User-Name 1 string
ATTRIBUTE User-Password 2 string encrypt=1
ATTRIBUTE Filter-Id 11 string
ATTRIBUTE Reply-Message 18 string
ATTRIBUTE Class 25 octets
ATTRIBUTE NAS-Identifier 32 string
ATTRIBUTE Message-Authenticator 80 octets
"""
NAS_IDENTIFIER = "balancer"
# RFC 2865 5.2: User-Password holds at most 128 octets.
MAX_PASSWORD = 128
# Each server is sent the request this many times in all before the next is asked.
TRIES = 2


def sign_in(settings: Settings, name: str, password: str, secret: str) -> Accepted:
    """The user ``name`` signed in with ``password``, or Refused naming why."""
    name = name.strip()
    if not name:
        raise Refused("not_found", "no user name was given")
    if not password:
        raise Refused("password", f"{name}: an empty password is never sent to the server")
    if len(password.encode()) > MAX_PASSWORD:
        raise Refused("password", f"{name}: a password longer than {MAX_PASSWORD} bytes")
    reply, where = _ask(settings, name, password, secret)
    if reply.code != packet.AccessAccept:
        said = _values(reply, "Reply-Message")
        told = f" ({'; '.join(said)})" if said else ""
        raise Refused("password", f"{where}: Access-Reject for {name}{told}")
    values = _values(reply, settings.role_attribute)
    role = role_of(settings, values)
    if role is None:
        listed = ", ".join(values) or "none"
        raise Refused(
            "group",
            f"{name}: no {settings.role_attribute} mapped to a role, and no default role "
            f"(its values: {listed})",
        )
    return Accepted(name, role, tuple(values))


def _ask(settings: Settings, name: str, password: str, secret: str) -> tuple[packet.Packet, str]:
    """The first valid reply, and the server that sent it."""
    silent: list[str] = []
    for host, port in settings.addresses():
        where = f"{host}:{port}"
        client = Client(
            server=host,
            authport=port,
            secret=secret.encode(),
            dict=Dictionary(io.StringIO(_DICTIONARY)),
            retries=TRIES,
            timeout=settings.timeout / TRIES,
            enforce_ma=True,
        )
        request = client.CreateAuthPacket(User_Name=name, NAS_Identifier=NAS_IDENTIFIER)
        request["User-Password"] = request.PwCrypt(password)
        try:
            return client.SendPacket(request), where
        except Timeout:
            silent.append(where)
        except OSError as error:
            silent.append(f"{where} ({error.strerror or error})")
        finally:
            client._CloseSocket()  # pyrad has no public close; the collector would be late
    raise Refused(
        "unreachable",
        f"no valid answer from {', '.join(silent)} in {settings.timeout:g} s each: the server "
        "is down, or the shared secret differs, or its reply has no Message-Authenticator",
    )


def _values(reply: packet.Packet, attribute: str) -> list[str]:
    if attribute not in reply:
        return []
    return [
        value.decode(errors="replace") if isinstance(value, bytes) else str(value)
        for value in reply[attribute]
    ]
