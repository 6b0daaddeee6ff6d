"""Forms that upload a file (a backup, a certificate): read whole into memory up to a limit
before anything parses them, so an oversized upload is refused without filling a disk.

The gate has already checked the form's CSRF token, its first field.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

from fastapi import Request
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from balancer.front import bodies
from balancer.validate import Invalid, Problem

# Beyond the files' own limits: field names, the token, part headers.
OVERHEAD = 16 << 10


async def files(request: Request, limit: int, *names: str) -> dict[str, bytes]:
    """The files ``names`` of the multipart form of ``request``, empty where none was chosen;
    Invalid naming the first if the form is over ``limit`` bytes (plus the form's own
    overhead) or is not a form."""
    form = await _form(request, limit, names[0])
    try:
        return {name: await _content(form, name) for name in names}
    finally:
        await form.close()


async def _form(request: Request, limit: int, field: str) -> FormData:
    return await _parsed(request, await bodies.read(request, limit + OVERHEAD, field), field)


async def _content(data: FormData, field: str) -> bytes:
    item = data.get(field)
    return await item.read() if isinstance(item, UploadFile) else b""


async def _parsed(request: Request, body: bytes, field: str) -> FormData:
    async def once() -> AsyncGenerator[bytes, None]:
        yield body

    if "boundary=" not in request.headers.get("content-type", ""):
        raise Invalid([Problem(field, "was not sent as a file upload (multipart/form-data)")])
    try:
        return await MultiPartParser(request.headers, once(), max_files=4, max_fields=8).parse()
    except MultiPartException as error:
        raise Invalid([Problem(field, f"was not sent as a file upload: {error}")]) from None
