"""The scenarios of issue 5, each one run of the C load generator against one target (a proxy's
VIP, or a backend straight for the "direct" row), with the checks that no byte was lost and no
connection failed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import procfs

SETTLE = 1.0  # seconds after the idle connections are open, before memory is read
READY_TIMEOUT = 180.0


class BenchError(Exception):
    """A tool could not run as the bench needs."""


@dataclass(frozen=True)
class Tools:
    loadgen: Path
    backends: Path
    source: str  # the first client address; the generator counts on from it
    sources: int

    def command(self, mode: str, target: str, **options: object) -> list[str]:
        words = [str(self.loadgen), mode, target, "--source", self.source]
        words += ["--sources", str(self.sources)]
        for name, value in options.items():
            words += [f"--{name}", str(value)]
        return words


@dataclass
class Outcome:
    values: dict[str, float]  # metric key (without the scenario's suffix) -> value
    problems: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)


def _problems(result: dict[str, Any]) -> list[str]:
    found = []
    for key, what in (
        ("failed", "connections failed"),
        ("lost", "bytes lost" if result.get("mode") == "bulk" else "echoes lost"),
        ("mismatched", "echoes differed from what was sent"),
        ("late", "messages not sent: the previous echo was late"),
    ):
        if result.get(key):
            found.append(f"{result[key]:,} {what}")
    return found


async def _loadgen(tools: Tools, mode: str, target: str, **options: object) -> dict[str, Any]:
    process = await asyncio.create_subprocess_exec(
        *tools.command(mode, target, **options),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    if process.returncode != 0:
        raise BenchError(f"loadgen {mode} {target}: exit {process.returncode}: {err.decode()}")
    result: dict[str, Any] = json.loads(out.decode().splitlines()[-1])
    return result


async def bulk(tools: Tools, target: str, streams: int, duration: float) -> Outcome:
    result = await _loadgen(tools, "bulk", target, streams=streams, duration=duration)
    seconds = result["seconds"]
    rate = result["received"] / seconds / 1e6 if seconds > 0 else 0.0
    return Outcome({f"bulk_{streams}": rate}, _problems(result), result)


async def connect(tools: Tools, target: str, concurrency: int, duration: float) -> Outcome:
    """New connections: ``concurrency`` at once, each 100 bytes each way. One at a time, the
    latency of each (connect to the echo's last byte) is the point."""
    result = await _loadgen(
        tools, "connect", target, concurrency=concurrency, duration=duration, size=100
    )
    if concurrency > 1:
        values = {f"connect_{concurrency}": result["counted"] / duration}
    else:
        latency = result["latency_us"]
        values = {"p50_serial": latency["p50"], "p99_serial": latency["p99"]}
    return Outcome(values, _problems(result), result)


async def idle(
    tools: Tools, target: str, conns: int, window: float, pids: Callable[[], list[int]]
) -> Outcome:
    """``conns`` connections that each send 32 bytes a second and read their echo: the proxy's
    memory per connection (its processes' PSS with them open, less before), and its CPU time
    per message over ``window`` seconds (each message crosses the proxy twice, there and
    back)."""
    before = procfs.pss_kib(pids())
    process = await asyncio.create_subprocess_exec(
        *tools.command("idle", target, conns=conns, size=32, interval=1.0),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdin is not None
    assert process.stdout is not None
    stdin, stdout = process.stdin, process.stdout

    async def say(word: str) -> dict[str, Any]:
        if word:
            stdin.write(word.encode() + b"\n")
            await stdin.drain()
        line = await asyncio.wait_for(stdout.readline(), READY_TIMEOUT)
        if not line:
            raise BenchError(f"loadgen idle {target} ended before answering {word or 'ready'}")
        reply: dict[str, Any] = json.loads(line)
        return reply

    try:
        ready = await say("")
        await asyncio.sleep(SETTLE)
        after = procfs.pss_kib(pids())
        first = await say("mark")
        cpu_first = procfs.cpu_seconds(pids())
        await asyncio.sleep(window)
        last = await say("mark")
        cpu_last = procfs.cpu_seconds(pids())
        result = await say("stop")
        await asyncio.wait_for(process.wait(), READY_TIMEOUT)
    except BaseException:
        # Only here: killing a process that has ended reaps it behind asyncio's back.
        if process.returncode is None:
            process.kill()
        await process.wait()
        raise
    established = ready["established"]
    messages = last["messages"] - first["messages"]
    values = {}
    if established:
        values["idle_memory"] = (after - before) / established
    if messages:
        values["idle_cpu"] = (cpu_last - cpu_first) / messages * 1e6
    result.update(ready=ready, pss_before_kib=before, pss_after_kib=after, window_messages=messages)
    problems = _problems(result)
    if established < conns:
        problems.append(f"{conns - established:,} of {conns:,} connections never opened")
    return Outcome(values, problems, result)
