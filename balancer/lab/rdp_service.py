"""The lab's stand-in for a PSM server's RDP service: a valid RDP opening, then an echo.

RDP clients speak first, so the stand-in never writes before the client's first bytes. Then:

- If they are an X.224 Connection Request (TPKT version 3, X.224 code 0xE0), it answers with a
  Connection Confirm and nothing else — selecting standard RDP security (PROTOCOL_RDP) when the
  client negotiated, as a server without TLS does. If the next bytes are ``WHO\\n`` it answers
  ``<name>\\n`` in their place, so a test that went through RDP can learn which server it reached.
  Everything else is echoed.
- Otherwise it answers ``<name>\\n``, then echoes those first bytes and everything after.

A client that may be partway through a TPKT packet is waited for until the packet is whole. When
the client half-closes, the stand-in finishes echoing what it received and then closes: the
client reads the whole echo, then end of file. Reading pauses whenever the client does not read
its echo fast enough, so a transfer of any size stays within the transport's buffers.

A session accepted while the server hangs reads and throws away, and never answers.
"""

from __future__ import annotations

import asyncio
from typing import cast

from balancer.lab import rdp
from balancer.lab.connections import Connections

WHO = b"WHO\n"


class Opening:
    """What the stand-in answers before it only echoes: fed the client's bytes, returns replies."""

    def __init__(self, name: str) -> None:
        self._name = name.encode() + b"\n"
        self._buffer = b""
        self._confirmed = False
        self.done = False  # from now on the client's bytes are echoed as they are

    def feed(self, data: bytes) -> bytes:
        self._buffer += data
        if self._confirmed:
            return self._after_confirm()
        if rdp.incomplete(self._buffer):
            return b""
        request = rdp.parse_connection_request(self._buffer)
        if request is None:
            return self._finish(self._name + self._buffer)
        self._confirmed = True
        self._buffer = self._buffer[request.length :]
        selected = None if request.protocols is None else rdp.PROTOCOL_RDP
        return rdp.connection_confirm(selected) + self._after_confirm()

    def eof(self) -> bytes:
        """The client sent its last bytes before the opening was over: answer what it sent."""
        if self._confirmed or not self._buffer:
            return self._finish(self._buffer)
        return self._finish(self._name + self._buffer)

    def _after_confirm(self) -> bytes:
        if self._buffer.startswith(WHO):
            return self._finish(self._name + self._buffer[len(WHO) :])
        if WHO.startswith(self._buffer):
            return b""
        return self._finish(self._buffer)

    def _finish(self, reply: bytes) -> bytes:
        self.done = True
        self._buffer = b""
        return reply


class RdpService(asyncio.Protocol):
    _transport: asyncio.Transport  # from connection_made on

    def __init__(self, name: str, connections: Connections, hung: bool) -> None:
        self._opening = Opening(name)
        self._connections = connections
        self._hung = hung

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._connections.opened(self._transport)

    def data_received(self, data: bytes) -> None:
        if self._hung:
            return
        self._write(data if self._opening.done else self._opening.feed(data))

    def eof_received(self) -> bool:
        if not self._hung and not self._opening.done:
            self._write(self._opening.eof())
        # False has the transport close itself once all the echo is sent: the client then sees
        # end of file right after the last byte it sent.
        return False

    def pause_writing(self) -> None:
        self._transport.pause_reading()

    def resume_writing(self) -> None:
        self._transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self._connections.closed(self._transport)

    def _write(self, data: bytes) -> None:
        if data:
            self._transport.write(data)
