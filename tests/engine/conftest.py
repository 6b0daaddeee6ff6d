"""Fixtures of the engine suite: a started engine per engine name, addresses, TLS, and a runner
for ``async def`` tests (there is no asyncio plugin; see ``pytest_pyfunc_call``)."""

from __future__ import annotations

import asyncio
import inspect
import shutil
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from balancer import engines
from balancer.engines import Engine
from tests.backends import Addresses, self_signed

HAPROXY_MISSING = shutil.which("haproxy", path="/usr/sbin:/usr/bin:/sbin:/bin") is None
ENGINES = [
    pytest.param("builtin"),
    pytest.param(
        "haproxy",
        marks=[
            pytest.mark.skipif(
                HAPROXY_MISSING, reason="HAProxy is not installed (make test installs it)"
            ),
            pytest.mark.skipif(
                "haproxy" not in engines.ENGINES, reason="the engine registry has no haproxy yet"
            ),
        ],
    ),
]
ATTACH_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
LOG_TAIL = 40  # lines of each engine log shown when a test fails


@pytest.fixture
def runner() -> Iterator[asyncio.Runner]:
    """One event loop per test, shared by its fixtures and its body."""
    with asyncio.Runner() as runner:
        yield runner


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run an ``async def`` test to completion on the test's ``runner``."""
    function = pyfuncitem.obj
    if not inspect.iscoroutinefunction(function):
        return None
    funcargs = pyfuncitem.funcargs
    arguments = {name: funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    runner = funcargs.get("runner")
    if isinstance(runner, asyncio.Runner):
        runner.run(function(**arguments))
    else:
        asyncio.run(function(**arguments))
    return True


@pytest.fixture(params=ENGINES)
def engine(
    request: pytest.FixtureRequest,
    runner: asyncio.Runner,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Engine]:
    """A started engine with its own data directory; stopped however the test ends."""
    # A short directory: the engine's control socket path must fit in sun_path (108 bytes).
    data_dir = tmp_path_factory.mktemp(request.param)
    started = engines.engine(request.param, data_dir)
    try:
        runner.run(asyncio.wait_for(started.attach(), ATTACH_TIMEOUT))
        yield started
    finally:
        runner.run(asyncio.wait_for(started.stop(), STOP_TIMEOUT))
        report = getattr(request.node, "report_call", None)
        if report is not None and report.failed:
            _show_logs(data_dir)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    """Keep the call phase's report on the item, so fixtures can tell a test failed."""
    report = yield
    if call.when == "call":
        item.report_call = report  # type: ignore[attr-defined]
    return report


def _show_logs(data_dir: Path) -> None:
    for path in sorted(data_dir.rglob("*")):
        if path.is_file() and path.suffix in (".log", ".out"):
            lines = path.read_text(errors="replace").splitlines()[-LOG_TAIL:]
            print(f"--- {path} (last {len(lines)} lines)", *lines, sep="\n")


@pytest.fixture
def net() -> Addresses:
    """Loopback addresses of this test's own (127.a.b.1, 127.a.b.2, ...)."""
    return Addresses()


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    """A server TLS context with a self-signed certificate, for health endpoints."""
    return self_signed(tmp_path_factory.mktemp("tls"))
