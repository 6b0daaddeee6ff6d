"""Small value types shared by the model: labels, ports, port sets and endpoints."""

from __future__ import annotations

import itertools
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
)

IPAddress = IPv4Address | IPv6Address


class Frozen(BaseModel):
    """Base of every model class: immutable, and unknown fields are an error, not ignored."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_enum_values=False)


LABEL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
# What LABEL_PATTERN asks, in the words an operator is refused with.
LABEL_RULE = (
    "use letters, digits, dots, dashes and underscores, up to 64 characters, "
    "starting with a letter or digit"
)
Label = Annotated[str, StringConstraints(strip_whitespace=True, pattern=LABEL_PATTERN)]
"""A name the operator gives: letters, digits, '.', '_' and '-', at most 64, e.g. CyberArk-PSM."""

Port = Annotated[int, Field(ge=1, le=65535)]


def _parse_address(value: Any) -> Any:
    """A string (or an address object); never a number, which ip_address() would take."""
    if isinstance(value, IPv4Address | IPv6Address):
        return value
    if isinstance(value, str):
        try:
            return ip_address(value.strip())
        except ValueError:
            pass
    raise ValueError(f"{value!r} is not an IPv4 or IPv6 address")


Address = Annotated[IPAddress, BeforeValidator(_parse_address), PlainSerializer(str)]


def _parse_network(value: Any) -> Any:
    """A network as text, e.g. 10.1.0.0/16 or 2001:db8::/32; an address alone is its /32 or
    /128."""
    if isinstance(value, IPv4Network | IPv6Network):
        return value
    if isinstance(value, str):
        try:
            return ip_network(value.strip())
        except ValueError:
            pass
    raise ValueError(f"{value!r} is not an IPv4 or IPv6 network (host bits must be zero)")


Network = Annotated[
    IPv4Network | IPv6Network, BeforeValidator(_parse_network), PlainSerializer(str)
]


PortRange = tuple[int, int]


def _parse_ports(value: Any) -> tuple[PortRange, ...]:
    """Accept "3389", "3389,3390", "8000-8010", 3389 or a list of those; keep sorted ranges."""
    if isinstance(value, int) and not isinstance(value, bool):
        items: list[Any] = [value]
    elif isinstance(value, str):
        items = "".join(value.split()).split(",")  # any whitespace, anywhere
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        raise ValueError("ports must be like 3389, '3389,3390' or '8000-8010'")
    ranges: list[PortRange] = []
    for item in items:
        ranges.append(_parse_range(item))
    if not ranges:
        raise ValueError("at least one port is needed")
    ranges.sort()
    for (_, hi), (lo, _) in itertools.pairwise(ranges):
        if lo <= hi:
            raise ValueError(f"port {lo} is listed twice")
    return tuple(ranges)


def _parse_range(item: Any) -> PortRange:
    if isinstance(item, int) and not isinstance(item, bool):
        lo = hi = item
    elif isinstance(item, str) and item:
        first, sep, last = item.partition("-")
        if not (item.isascii() and first.isdigit() and (not sep or last.isdigit())):
            raise ValueError(f"{item!r} is not a port or a range like 8000-8010")
        lo, hi = int(first), int(last) if sep else int(first)
    elif isinstance(item, list | tuple) and len(item) == 2:
        lo, hi = (_parse_range(item[0])[0], _parse_range(item[1])[0])
    else:
        raise ValueError(f"{item!r} is not a port or a range like 8000-8010")
    for port in (lo, hi):
        if not 1 <= port <= 65535:
            raise ValueError(f"port {port} is outside 1..65535")
    if lo > hi:
        raise ValueError(f"range {lo}-{hi} runs backwards")
    return (lo, hi)


def format_ports(ranges: tuple[PortRange, ...]) -> str:
    return ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in ranges)


Ports = Annotated[
    tuple[PortRange, ...],
    BeforeValidator(_parse_ports),
    PlainSerializer(format_ports, return_type=str),
]
"""One or more ports and port ranges; written "3389,3390" or "8000-8010" in documents."""


def each_port(ranges: tuple[PortRange, ...]) -> list[int]:
    return [port for lo, hi in ranges for port in range(lo, hi + 1)]


class Endpoint(Frozen):
    """An address and port, e.g. the fallback server."""

    ip: Address
    port: Port
