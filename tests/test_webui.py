"""The WebUI in a real browser (Debian's chromium, driven by Playwright) against the whole
appliance and the lab: sign in, watch System Overview, see a failing PSM server go red with its
reason without reloading, drain it from the overview. Screenshots go to artifacts/screenshots.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.appliance import PASSWORD, Guide, guide_setup, wait_for

playwright = pytest.importorskip("playwright.sync_api")

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).parent.parent / "artifacts" / "screenshots"
# How long the page may take to show a change; the overview refreshes every 2 s.
SEEN_WITHIN = 15_000  # ms

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian's chromium: `make system` installs it"
)


@pytest.fixture
def guide(tmp_path: Path) -> Iterator[Guide]:
    with guide_setup(tmp_path) as running:
        yield running


@pytest.fixture
def browser(guide: Guide) -> Iterator[Any]:
    """Started after the appliance and stopped before it: Playwright's driver keeps an event
    loop running in this thread, and the lab is started and stopped with asyncio.run."""
    with playwright.sync_playwright() as driver:
        launched = driver.chromium.launch(
            executable_path=str(CHROMIUM),
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


def open_page(browser: Any, width: int, height: int) -> Any:
    # The appliance's certificate is self-signed, as the guide warns the browser will say.
    context = browser.new_context(
        ignore_https_errors=True, viewport={"width": width, "height": height}
    )
    context.set_default_timeout(SEEN_WITHIN)
    return context.new_page()


def shoot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def sign_in(page: Any, guide: Guide, screenshot: str | None = None) -> None:
    page.goto(guide.box.webui)
    page.wait_for_url("**/lbadmin/sign-in")
    if screenshot:
        shoot(page, screenshot)
    page.fill("#username", "loadbalancer")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/lbadmin/")
    playwright.expect(page.get_by_role("heading", name="System Overview")).to_be_visible()


def row(page: Any, service: str, server: str) -> Any:
    return page.locator(f'tr[data-server="{service}/{server}"]')


def lab_set(guide: Guide, server: str, mode: str) -> None:
    done = guide.box.cli("lab", "set", server, mode, "--lab-dir", str(guide.lab_dir))
    assert done.returncode == 0, done.stderr


def test_sign_in_watch_a_server_fail_and_drain_it(browser: Any, guide: Guide) -> None:
    page = open_page(browser, 1280, 800)
    sign_in(page, guide, screenshot="sign-in")
    for service in ("CyberArk-PSM", "CyberArk-PSM-Web"):
        playwright.expect(page.locator(f'tr.vip[data-service="{service}"]')).to_have_class(
            "vip state-online"
        )
        for server in ("PSM1", "PSM2"):
            playwright.expect(row(page, service, server)).to_have_class("rip state-online")
    shoot(page, "system-overview")

    # Whatever happens next must happen in this page, not in a reloaded one.
    page.evaluate("window.notReloaded = true")
    lab_set(guide, "PSM2", "fail")
    failed = row(page, "CyberArk-PSM", "PSM2")
    playwright.expect(failed).to_have_class("rip state-failed")
    playwright.expect(failed).to_have_attribute("title", "expected PASS, got FAIL")
    playwright.expect(failed).to_contain_text("expected PASS, got FAIL")
    playwright.expect(page.locator('tr.vip[data-service="CyberArk-PSM"]')).to_have_class(
        "vip state-degraded"
    )
    assert page.evaluate("window.notReloaded") is True
    shoot(page, "psm2-failed")

    with page.expect_request("**/lbadmin/overview/state") as drain:
        failed.get_by_role("button", name="Drain").click()
    assert "x-balancer-poll" not in drain.value.headers  # a click is use: it keeps the session
    playwright.expect(failed).to_have_class("rip state-drain")
    playwright.expect(failed.get_by_role("button", name="Drain")).to_be_disabled()
    assert page.evaluate("window.notReloaded") is True
    assert guide.box.server("CyberArk-PSM", "PSM2")["state"] == "drain"
    drained = guide.box.client.get("/audit", limit=5)
    assert ("loadbalancer", "drain") in {(e["author"], e["action"]) for e in drained}
    shoot(page, "psm2-drained")

    lab_set(guide, "PSM2", "pass")
    failed.get_by_role("button", name="Online").click()
    playwright.expect(failed).to_have_class("rip state-online")


def test_the_commit_box_lists_saved_changes_and_commits_them(browser: Any, guide: Guide) -> None:
    guide.box.client.patch("/virtual-services/CyberArk-PSM-Web/real-servers/PSM2", {"weight": 50})
    page = open_page(browser, 1280, 800)
    sign_in(page, guide)
    box = page.locator("#commit-box")
    playwright.expect(box).to_contain_text("real_servers[PSM2].weight: 100 -> 50")
    shoot(page, "commit-changes")
    box.get_by_role("button", name="Commit").click()
    playwright.expect(box).to_contain_text("is running")
    wait_for("the commit", lambda: guide.box.server("CyberArk-PSM-Web", "PSM2")["weight"] == 50)


def test_tablet_width_and_an_unreachable_appliance(browser: Any, guide: Guide) -> None:
    page = open_page(browser, 768, 1024)
    sign_in(page, guide, screenshot="sign-in-768")
    playwright.expect(row(page, "CyberArk-PSM", "PSM1")).to_have_class("rip state-online")
    # The menu sits above the page and nothing makes the page wider than the screen.
    menu = page.locator("nav.menu").bounding_box()
    table = page.locator("table.overview").bounding_box()
    assert menu["y"] + menu["height"] <= table["y"]
    assert page.evaluate("document.documentElement.scrollWidth") <= 768
    for button in ("Drain", "Halt", "Online"):  # every action within reach, none scrolled off
        box = row(page, "CyberArk-PSM", "PSM1").get_by_role("button", name=button).bounding_box()
        assert box["x"] + box["width"] <= 768, button
    shoot(page, "system-overview-768")

    guide.box.process.kill()
    guide.box.process.wait(10)
    playwright.expect(page.locator("#unreachable")).to_be_visible()
    shoot(page, "unreachable-768")
    # Sessions live in the daemon: once it is back, the page asks to sign in again.
    guide.box.start()
    page.wait_for_url("**/lbadmin/sign-in")
