"""Clients that learn which lab PSM server they reached through a virtual service: the demo's
tour and the end-to-end tests use them, over RDP (VIP 1) and the HTML5 gateway (VIP 2)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl

from balancer.lab import rdp

TIMEOUT = 10.0

Address = tuple[str, int]


class RdpSession:
    """An RDP opening through a VIP (X.224 request, confirm), then who-are-you and echo."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer, self.name = reader, writer, ""

    @classmethod
    async def open(cls, vip: Address, source: str) -> RdpSession:
        async with asyncio.timeout(TIMEOUT):
            reader, writer = await asyncio.open_connection(*vip, local_addr=(source, 0))
            session = cls(reader, writer)
            await session.greet()
        return session

    async def greet(self) -> None:
        """The opening on a connection just made; closed if it fails."""
        try:
            self.writer.write(rdp.connection_request(cookie="balancer"))
            confirm = await self.reader.readexactly(len(rdp.connection_confirm(rdp.PROTOCOL_RDP)))
            if not rdp.is_connection_confirm(confirm):
                vip = self.writer.get_extra_info("peername")
                raise RuntimeError(f"{vip[0]}:{vip[1]} did not answer like an RDP server")
            self.writer.write(b"WHO\n")
            self.name = (await self.reader.readline()).decode().strip()
        except BaseException:
            await self.close()
            raise

    async def echo(self, payload: bytes) -> bool:
        async with asyncio.timeout(TIMEOUT):
            self.writer.write(payload)
            return await self.reader.readexactly(len(payload)) == payload

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


async def rdp_lands(vip: Address, source: str) -> str:
    """The PSM server an RDP client at ``source`` reaches through ``vip``."""
    session = await RdpSession.open(vip, source)
    await session.close()
    return session.name


async def web_lands(vip: Address, source: str) -> str:
    """The PSM server whose HTML5 gateway page a browser at ``source`` gets through ``vip``."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # lab certificates are self-signed, as PSM's often are
    async with asyncio.timeout(TIMEOUT):
        reader, writer = await asyncio.open_connection(*vip, ssl=context, local_addr=(source, 0))
        writer.write(b"GET / HTTP/1.0\r\n\r\n")
        page = (await reader.read()).decode(errors="replace")
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await writer.wait_closed()
    start = page.index("<h1>") + 4
    return page[start : page.index("</h1>", start)]
