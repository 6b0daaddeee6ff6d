"""Running a checking tool to its end (``haproxy -c``, ``keepalived -t``): its exit status and
what it said, or TimeoutError once it is killed for taking too long."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Sequence


async def run(argv: Sequence[str], timeout: float) -> tuple[int, str]:
    """``argv``'s exit status and its output (stdout and stderr together, as a person sees it)."""
    process = await asyncio.create_subprocess_exec(
        *argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        async with asyncio.timeout(timeout):
            output, _ = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None  # communicate() returns once it has ended
    return process.returncode, output.decode(errors="replace")
