"""What the administrator sets for directory sign-in, and the pure parts of it: the forms a
user name is typed in, the LDAP filter made from it, and the group -> role mapping.

Pure: no socket here (``ldap`` and ``radius`` are the I/O)."""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass
from typing import Annotated, Literal

from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import parse_dn
from pydantic import Field, field_validator, model_validator

from balancer.model.types import Frozen
from balancer.roles import Role

Kind = Literal["ldap", "ldaps", "starttls", "radius"]
DEFAULT_PORTS = {"ldap": 389, "starttls": 389, "ldaps": 636, "radius": 1812}
# Active Directory's LDAP_MATCHING_RULE_IN_CHAIN: the server walks nested groups itself.
IN_CHAIN = "1.2.840.113556.1.4.1941"
# How deep an OpenLDAP group walk goes, and how many groups it reads at most: a loop of groups
# or a huge tree ends the walk, not the sign-in.
WALK_DEPTH = 8
WALK_GROUPS = 500

Server = Annotated[
    str,
    Field(
        max_length=260,
        description="host or host:port ([v6]:port); the kind's port when none is given",
    ),
]
_SERVER = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?")
Group = Annotated[str, Field(min_length=1, max_length=1000)]


class Mapping(Frozen):
    """Members of ``group`` sign in with ``role``. LDAP: the group's DN, or its name (cn);
    RADIUS: a value of the reply attribute."""

    group: Group
    role: Role


class Settings(Frozen):
    kind: Kind
    servers: tuple[Server, ...] = Field(min_length=1, max_length=4)
    timeout: float = Field(default=5.0, gt=0, le=30, description="seconds, per server")
    # LDAP
    base_dn: str = Field(default="", max_length=1000, description="where users and groups are")
    bind_dn: str = Field(
        default="", max_length=1000, description="the account users are searched with"
    )
    user_filter: str = Field(
        default="(|(sAMAccountName={user})(userPrincipalName={upn})(uid={user}))",
        max_length=1000,
        description="{user}: the name without DOMAIN\\ or @domain; {upn}: user@domain; "
        "{name}: as typed",
    )
    domain: str = Field(
        default="",
        max_length=253,
        pattern=r"^[A-Za-z0-9.-]*$",
        description="Active Directory's DNS domain, for {upn} when a bare name is typed",
    )
    nested_groups: Literal["active_directory", "walk", "none"] = Field(
        default="walk",
        description="active_directory: the server's in-chain rule; walk: group by group",
    )
    member_attribute: str = Field(default="member", pattern=r"^[A-Za-z][A-Za-z0-9-]{0,63}$")
    ca_certificate: str = Field(
        default="", max_length=100_000, description="PEM: the CA that issued the servers'"
    )
    # RADIUS
    role_attribute: Literal["Filter-Id", "Class"] = "Filter-Id"
    # Both
    roles: tuple[Mapping, ...] = Field(default=(), max_length=100)
    default_role: Role | None = Field(
        default=None, description="the role of a user in no mapped group; none: refused"
    )

    @field_validator("ca_certificate")
    @classmethod
    def _pem(cls, value: str) -> str:
        if value.strip():
            if "-----BEGIN CERTIFICATE-----" not in value:
                raise ValueError("must be a PEM certificate (-----BEGIN CERTIFICATE-----)")
            try:
                ssl.create_default_context(cadata=value)
            except (ssl.SSLError, ValueError) as error:
                raise ValueError(f"is not a certificate TLS can use: {error}") from None
        return value

    @field_validator("servers")
    @classmethod
    def _servers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for server in value:
            if not _SERVER.fullmatch(server):
                raise ValueError(f"{server!r}: write host or host:port, an IPv6 address in []")
            _, colon, port = server.rpartition(":")
            if colon and not server.endswith("]") and not 1 <= int(port) <= 65535:
                raise ValueError(f"{server}: a port is 1 to 65535")
        return value

    @field_validator("base_dn", "bind_dn")
    @classmethod
    def _dn(cls, value: str) -> str:
        if value:
            try:
                parse_dn(value, strip=True)
            except Exception:
                raise ValueError(f"{value!r} is not a DN (e.g. dc=example,dc=com)") from None
        return value

    @model_validator(mode="after")
    def _complete(self) -> Settings:
        if self.kind != "radius":
            if not self.base_dn:
                raise ValueError("base_dn: is needed to search for users")
            if "{user}" not in self.user_filter and "{upn}" not in self.user_filter:
                raise ValueError("user_filter: must hold {user} or {upn}")
            if not (self.user_filter.startswith("(") and self.user_filter.endswith(")")):
                raise ValueError("user_filter: must be an LDAP filter in parentheses")
        if not self.roles and self.default_role is None:
            raise ValueError("roles: map a group to a role, or set a default role")
        return self

    def addresses(self) -> list[tuple[str, int]]:
        """Each server's host and port, in the order they are tried."""
        found = []
        for server in self.servers:
            host, colon, port = server.rpartition(":")
            if not colon or server.endswith("]"):
                host, port = server, ""
            found.append((host.strip("[]"), int(port) if port else DEFAULT_PORTS[self.kind]))
        return found


@dataclass(frozen=True)
class Name:
    """A user name as typed: ``user``, ``DOMAIN\\user`` or ``user@domain``."""

    typed: str
    user: str  # without DOMAIN\ or @domain
    upn: str  # user@domain

    @classmethod
    def of(cls, typed: str, domain: str) -> Name:
        _, backslash, after = typed.rpartition("\\")
        bare = after if backslash else typed
        user, at, _ = bare.partition("@")
        upn = bare if at else (f"{user}@{domain}" if domain else user)
        return cls(typed, user, upn)


def user_filter(settings: Settings, name: Name) -> str:
    """The search for ``name``'s entry, every value escaped (a name cannot widen the search)."""
    return (
        settings.user_filter.replace("{user}", escape_filter_chars(name.user))
        .replace("{upn}", escape_filter_chars(name.upn))
        .replace("{name}", escape_filter_chars(name.typed))
    )


def in_chain_filter(attribute: str, dn: str) -> str:
    """Active Directory: every group ``dn`` is in, directly or through nested groups."""
    return f"({attribute}:{IN_CHAIN}:={escape_filter_chars(dn)})"


def member_filter(attribute: str, dn: str) -> str:
    return f"({attribute}={escape_filter_chars(dn)})"


def role_of(settings: Settings, groups: list[str]) -> Role | None:
    """The highest role a mapping gives one of ``groups`` (DNs, or RADIUS values), else the
    default role; None: refused. A mapping names a group by DN, or by its first RDN's value."""
    names = {_key(group) for group in groups} | {_first_value(group) for group in groups}
    roles = [m.role for m in settings.roles if _key(m.group) in names]
    if roles:
        return max(roles, key=lambda role: role.rank)
    return settings.default_role


def _key(group: str) -> str:
    """A DN or name compared as LDAP does, without case or spaces around separators."""
    try:
        return ",".join(f"{a}={v}".lower() for a, v, _ in parse_dn(group, strip=True))
    except Exception:
        return group.strip().lower()


def _first_value(group: str) -> str:
    try:
        return str(parse_dn(group, strip=True)[0][1]).lower()
    except Exception:
        return group.strip().lower()
