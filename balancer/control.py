"""A control channel: one JSON object per line over a Unix socket, request then reply.

The built-in engine and the lab both answer on one, and the management daemon and the tests
talk to them through it. A reply is ``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]

LINE_LIMIT = 64 * 1024 * 1024  # a full configuration travels in one line


class ControlError(Exception):
    """The other side answered with an error, or could not be reached."""


class ControlServer:
    """A control socket being served; ``close`` ends every open session as well."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self._sessions: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        self._server: asyncio.Server | None = None

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._sessions[task] = writer
        try:
            while line := await reader.readline():
                try:
                    request = json.loads(line)
                    reply = await self._handler(request)
                except Exception as error:
                    log.debug("control request failed", exc_info=True)
                    reply = {"ok": False, "error": str(error) or type(error).__name__}
                writer.write(json.dumps(reply, default=str).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            del self._sessions[task]
            writer.close()

    async def close(self) -> None:
        # Sessions still open at shutdown end here, with their replies already sent, rather than
        # being cancelled when the loop closes (which Python 3.11 logs as an error).
        if self._server is not None:
            self._server.close()
        for writer in self._sessions.values():
            writer.close()
        if self._sessions:
            await asyncio.wait(list(self._sessions))


async def serve(path: Path, handler: Handler) -> ControlServer:
    """Answer requests on ``path`` (mode 0600) with ``handler``; errors become error replies."""
    control = ControlServer(handler)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    old = os.umask(0o177)  # never connectable by others, not even for an instant
    try:
        control._server = await asyncio.start_unix_server(
            control._session, path=str(path), limit=LINE_LIMIT
        )
    finally:
        os.umask(old)
    return control


async def request(path: Path, message: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    """Send one request and return the reply's fields; raise ControlError on any failure."""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_unix_connection(str(path), limit=LINE_LIMIT)
            try:
                writer.write(json.dumps(message, default=str).encode() + b"\n")
                await writer.drain()
                line = await reader.readline()
            finally:
                writer.close()
    except (OSError, TimeoutError) as error:
        raise ControlError(f"{path} did not answer: {error or type(error).__name__}") from None
    if not line:
        raise ControlError(f"{path} closed without answering")
    reply: dict[str, Any] = json.loads(line)
    if not reply.get("ok"):
        raise ControlError(str(reply.get("error", "unknown error")))
    return reply
