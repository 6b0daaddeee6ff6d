"""Fixtures of the HAProxy engine's own tests: the engine suite's event loop runner and
addresses, and a started HAProxy engine."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from balancer.engines.haproxy import HAPROXY, HaproxyEngine
from tests.engine.conftest import (
    ATTACH_TIMEOUT,
    HAPROXY_MISSING,
    STOP_TIMEOUT,
    net,
    pytest_pyfunc_call,
    runner,
    tls,
)

__all__ = ["haproxy", "net", "pytest_pyfunc_call", "runner", "tls"]


@pytest.fixture
def haproxy(
    runner: asyncio.Runner, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HaproxyEngine]:
    """A started HAProxy engine with its own data directory; stopped however the test ends."""
    if HAPROXY_MISSING:
        pytest.skip(f"HAProxy is not installed at {HAPROXY} (make test installs it)")
    engine = HaproxyEngine(tmp_path_factory.mktemp("haproxy"))
    try:
        runner.run(asyncio.wait_for(engine.attach(), ATTACH_TIMEOUT))
        yield engine
    finally:
        runner.run(asyncio.wait_for(engine.stop(), STOP_TIMEOUT))
