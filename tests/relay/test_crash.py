"""A fault in the compiled core is a crash of its worker, which the supervisor starts again:
never a hang. The core's test hook (``BALANCER_RELAY_FAULT=<port>``, known to the module as
``FAULT``, inert unless set) makes its loop crash as it accepts a client on that port."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
from collections.abc import Iterator

import pytest

from balancer.engines.builtin import BuiltinEngine
from tests.backends import Addresses, EchoServer, common_port
from tests.engine import IO_TIMEOUT, Revisions, landing, real_server, virtual_service, wait_for
from tests.engine.conftest import ATTACH_TIMEOUT, STOP_TIMEOUT
from tests.engine.test_workers import WORKERS, worker_of

from .conftest import core_missing, started_with


def hook_missing() -> str | None:
    """Why the core's fault hook cannot be used here; None if it can."""
    missing = core_missing()
    if missing is not None:
        return missing
    if not hasattr(importlib.import_module("balancer._relay"), "FAULT"):
        return "the compiled core has no fault hook (BALANCER_RELAY_FAULT) yet"
    return None


pytestmark = pytest.mark.skipif(hook_missing() is not None, reason=str(hook_missing()))


@pytest.fixture
def crashing(
    runner: asyncio.Runner, tmp_path_factory: pytest.TempPathFactory, net: Addresses
) -> Iterator[tuple[BuiltinEngine, str, int]]:
    """Two workers on the core, a VIP, and the port whose clients crash the core's loop."""
    engine = BuiltinEngine(tmp_path_factory.mktemp("crash"), workers=WORKERS)
    vip_ip = net.ip()
    port = common_port([vip_ip])
    try:
        with started_with({"BALANCER_RELAY": "core", "BALANCER_RELAY_FAULT": str(port)}):
            runner.run(asyncio.wait_for(engine.attach(), ATTACH_TIMEOUT))
        yield engine, vip_ip, port
    finally:
        runner.run(asyncio.wait_for(engine.stop(), STOP_TIMEOUT))


async def test_a_crash_of_the_core_is_a_worker_started_again(
    crashing: tuple[BuiltinEngine, str, int], net: Addresses
) -> None:
    engine, vip_ip, fatal = crashing
    async with EchoServer("A", net.ip()) as a:
        fine = common_port([vip_ip])
        await Revisions(engine).apply(
            virtual_service("fatal", (vip_ip, fatal), [real_server("A", a.address)]),
            virtual_service("fine", (vip_ip, fine), [real_server("A", a.address)]),
        )
        source = next(ip for ip in (net.ip() for _ in range(4)) if worker_of(ip) == 0)
        before = (await engine.worker_status())[0]["pid"]

        # The worker crashes with the client in hand: the client learns it at once.
        async with asyncio.timeout(IO_TIMEOUT):
            reader, writer = await asyncio.open_connection(vip_ip, fatal, local_addr=(source, 0))
        try:
            writer.write(b"hello\n")
            with contextlib.suppress(ConnectionError):
                async with asyncio.timeout(IO_TIMEOUT):
                    assert await reader.read() == b"", "a client of the crashed core was served"
        finally:
            writer.close()

        async def restarted() -> bool:
            now = (await engine.worker_status())[0]
            return now["pid"] != before and now["status"] is not None

        await wait_for(restarted, what="the crashed worker is running again")
        assert await landing((vip_ip, fine), source) == "A"
