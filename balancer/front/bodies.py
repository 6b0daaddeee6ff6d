"""Reading a request's body whole, up to a limit, before anything parses it: an oversized body
is refused with its field named, without filling memory or a disk. And ``RequestBody``, what
every operator's request body is read as."""

from __future__ import annotations

from fastapi import Request
from pydantic import BaseModel, ConfigDict

from balancer.validate import Invalid, Problem

# A body bigger than its limit is read this far, unused, so the client sees the answer rather
# than a connection closed while it was still sending.
DRAINED = 32 << 20


async def read(request: Request, limit: int, field: str) -> bytes:
    """The body of ``request``, or Invalid naming ``field`` if it is over ``limit`` bytes."""
    body = bytearray()
    stream = request.stream()
    async for chunk in stream:
        body += chunk
        if len(body) > limit:
            break
    else:
        return bytes(body)
    size = len(body)
    async for chunk in stream:
        size += len(chunk)
        if size > DRAINED:
            break
    shown = "more than 32 MiB" if size > DRAINED else f"{size} bytes"
    raise Invalid(
        [Problem(field, f"is too big: it is {shown}, and at most {limit} bytes are taken")]
    )


class RequestBody(BaseModel):
    """A request body of the API's: a field it does not know is refused, named ("is not a known
    setting"), never passed over. A misspelt ``role`` would otherwise make an administrator.
    Not for the routes between the nodes, where a newer peer may send more."""

    model_config = ConfigDict(extra="forbid")
