"""Driving the WebUI in a real browser: Debian's chromium through Playwright, never a browser
Playwright downloads. Screenshots of every page go to artifacts/screenshots.

Start the browser after the appliance and stop it before: Playwright's driver keeps an event
loop running in the thread, and the lab is started and stopped with asyncio.run.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.appliance import PASSWORD, Appliance, Guide

playwright = pytest.importorskip("playwright.sync_api")

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).parent.parent / "artifacts" / "screenshots"
# How long the page may take to show a change; the overview refreshes every 2 s.
SEEN_WITHIN = 15_000  # ms

needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian's chromium: `make system` installs it"
)


@contextmanager
def chromium(executable: Path = CHROMIUM) -> Iterator[Any]:
    """``executable``: Debian's chromium, or a script that runs it (in a network namespace)."""
    with playwright.sync_playwright() as driver:
        launched = driver.chromium.launch(
            executable_path=str(executable),
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
            ],
        )
        yield launched
        launched.close()


def open_page(
    browser: Any, width: int, height: int, *, downloads: bool = False, bypass_csp: bool = False
) -> Any:
    """``bypass_csp``: for a test that injects a script of its own (axe-core) into the pages."""
    # The appliance's certificate is self-signed, as the guide warns the browser will say.
    context = browser.new_context(
        ignore_https_errors=True,
        viewport={"width": width, "height": height},
        accept_downloads=downloads,
        bypass_csp=bypass_csp,
    )
    context.set_default_timeout(SEEN_WITHIN)
    return context.new_page()


def shoot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def sign_in(page: Any, box: Appliance, screenshot: str | None = None) -> None:
    page.goto(box.webui)
    page.wait_for_url("**/lbadmin/sign-in")
    if screenshot:
        shoot(page, screenshot)
    page.fill("#username", "loadbalancer")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/lbadmin/")
    playwright.expect(page.get_by_role("heading", name="System Overview")).to_be_visible()


def row(page: Any, service: str, server: str) -> Any:
    """A real server's row in System Overview."""
    return page.locator(f'tr[data-server="{service}/{server}"]')


def lab_set(guide: Guide, server: str, mode: str) -> None:
    done = guide.box.cli("lab", "set", server, mode, "--lab-dir", str(guide.lab_dir))
    assert done.returncode == 0, done.stderr
