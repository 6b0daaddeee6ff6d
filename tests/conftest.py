"""Fixtures the browser tests share: the guide's setup, or the lab behind an appliance with no
configuration at all (``bare``), and a browser started after either."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from balancer.lab.server import LabServerSpec
from tests.appliance import HOSTS, Guide, appliance, free_port, guide_setup, lab


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """SIGTERM interrupts the run as Ctrl-C does. On a pytest-xdist worker (``make test``),
    name its temporary directory by the worker's number alone: xdist's ``popen-gw1`` puts
    HAProxy's sockets past its 97-character limit on paths
    (``tmp_path/appliance/haproxy/haproxy.sock``), which a serial run stays within."""
    # A run cut short (timeout(1), a killed worker) is torn down as Ctrl-C tears it down: each
    # fixture stops the appliance and the engine it started. Without it they were orphaned,
    # since an engine outlives `balancer serve` by design.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    worker = getattr(config, "workerinput", {}).get("workerid")
    if worker is not None and config.option.basetemp:
        given = Path(config.option.basetemp)
        config.option.basetemp = str(given.with_name(worker.removeprefix("gw")))


@pytest.fixture
def guide(tmp_path: Path) -> Iterator[Guide]:
    with guide_setup(tmp_path) as running:
        yield running


@pytest.fixture
def browser(guide: Guide) -> Iterator[Any]:
    """Chromium, started after the appliance and stopped before it (see tests/browser.py)."""
    # Imported here: tests/browser.py skips whoever imports it when Playwright is missing.
    from tests.browser import chromium

    with chromium() as launched:
        yield launched


@pytest.fixture
def bare(tmp_path: Path) -> Iterator[Guide]:
    """The lab's two PSM servers and an appliance with no configuration at all."""
    rdp, web = free_port(HOSTS.values()), free_port(HOSTS.values())
    specs = [LabServerSpec(name, HOSTS[name], rdp, web) for name in ("PSM1", "PSM2")]
    with lab(tmp_path, specs) as lab_dir, appliance(tmp_path) as box:
        assert box.client.get("/config") == {"virtual_services": []}
        yield Guide(box, lab_dir, (HOSTS["rdp_vip"], rdp), (HOSTS["web_vip"], web))


@pytest.fixture
def bare_browser(bare: Guide) -> Iterator[Any]:
    """Chromium, started after the bare appliance and stopped before it."""
    from tests.browser import chromium

    with chromium() as launched:
        yield launched
