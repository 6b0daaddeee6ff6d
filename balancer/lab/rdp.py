"""RDP's opening exchange: the X.224 Connection Request and Connection Confirm, framed by TPKT.

Bytes in, bytes out ([MS-RDPBCGR] 2.2.1.1 and 2.2.1.2; TPKT is [T123] section 8), so the lab,
its tests and an RDP-aware health check share one reading of the wire.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

PROTOCOL_RDP = 0x0  # standard RDP security: what a server that cannot do TLS selects
PROTOCOL_SSL = 0x1
PROTOCOL_HYBRID = 0x2  # CredSSP, what mstsc asks for by default

_TPKT = struct.Struct(">BBH")  # version 3, reserved 0, length of the whole packet
_X224 = struct.Struct(">BBHHB")  # length indicator, code, destination ref, source ref, class
_NEGOTIATION = struct.Struct("<BBHI")  # type, flags, length 8, protocols
_TPKT_VERSION = 3
_CONNECTION_REQUEST = 0xE0
_CONNECTION_CONFIRM = 0xD0
_NEGOTIATION_REQUEST = 0x01
_NEGOTIATION_RESPONSE = 0x02
_COOKIE = b"Cookie: "
_USER = b"mstshash="
_SHORTEST = _TPKT.size + _X224.size


@dataclass(frozen=True, slots=True)
class ConnectionRequest:
    cookie: str | None  # the mstshash user name, the value RDP-cookie persistence keys on
    protocols: int | None  # requestedProtocols; None when the client did not negotiate
    length: int  # bytes the request took: whatever follows belongs to the next packet


def connection_request(cookie: str | None = None, protocols: int | None = PROTOCOL_RDP) -> bytes:
    """A client's first packet, carrying ``Cookie: mstshash=<cookie>`` when a cookie is given."""
    variable = b""
    if cookie is not None:
        variable += _COOKIE + _USER + cookie.encode("latin-1") + b"\r\n"
    if protocols is not None:
        variable += _NEGOTIATION.pack(_NEGOTIATION_REQUEST, 0, _NEGOTIATION.size, protocols)
    return _packet(_CONNECTION_REQUEST, variable)


def connection_confirm(protocol: int | None = None) -> bytes:
    """A server's answer; ``protocol`` is the one selected, given when the client negotiated."""
    variable = b""
    if protocol is not None:
        variable = _NEGOTIATION.pack(_NEGOTIATION_RESPONSE, 0, _NEGOTIATION.size, protocol)
    return _packet(_CONNECTION_CONFIRM, variable)


def packet_length(data: bytes) -> int | None:
    """The length of the TPKT packet ``data`` starts with; None if it starts with no TPKT header."""
    if len(data) < _TPKT.size:
        return None
    version, reserved, length = _TPKT.unpack_from(data)
    if version != _TPKT_VERSION or reserved != 0 or length <= _TPKT.size:
        return None
    return int(length)


def incomplete(data: bytes) -> bool:
    """Whether ``data`` may be the start of a TPKT packet that has not fully arrived yet."""
    if len(data) < _TPKT.size:
        return bytes([_TPKT_VERSION, 0]).startswith(data[:2])
    length = packet_length(data)
    return length is not None and len(data) < length


def parse_connection_request(data: bytes) -> ConnectionRequest | None:
    """The Connection Request ``data`` starts with; None unless it starts with a whole one."""
    length = _x224_length(data, _CONNECTION_REQUEST)
    if length is None:
        return None
    variable = data[_SHORTEST:length]
    cookie = None
    # A routing token and a cookie share the same "Cookie: ...\r\n" form; only the cookie names
    # a user.
    if variable.startswith(_COOKIE):
        end = variable.find(b"\r\n")
        if end < 0:
            return None
        token = variable[len(_COOKIE) : end]
        if token.startswith(_USER):
            cookie = token[len(_USER) :].decode("latin-1")
        variable = variable[end + 2 :]
    protocols = None
    if len(variable) >= _NEGOTIATION.size:
        kind, _flags, size, requested = _NEGOTIATION.unpack_from(variable)
        if kind == _NEGOTIATION_REQUEST and size == _NEGOTIATION.size:
            protocols = requested
    return ConnectionRequest(cookie, protocols, length)


def is_connection_confirm(data: bytes) -> bool:
    """Whether ``data`` starts with a whole Connection Confirm."""
    return _x224_length(data, _CONNECTION_CONFIRM) is not None


def _packet(code: int, variable: bytes) -> bytes:
    x224 = _X224.pack(_X224.size - 1 + len(variable), code, 0, 0, 0) + variable
    return _TPKT.pack(_TPKT_VERSION, 0, _TPKT.size + len(x224)) + x224


def _x224_length(data: bytes, code: int) -> int | None:
    """The packet's length if ``data`` starts with a whole class 0 X.224 TPDU of type ``code``."""
    length = packet_length(data)
    if length is None or length < _SHORTEST or len(data) < length:
        return None
    indicator, kind, _destination, _source, options = _X224.unpack_from(data, _TPKT.size)
    # The low nibble of the code is the credit, the high nibble of the options the class.
    if indicator != length - _TPKT.size - 1 or kind & 0xF0 != code or options >> 4 != 0:
        return None
    return length
