"""The read-only pages in a real browser against the whole appliance and the lab: System
Overview's bandwidth, load and memory refreshed in place, Reports counting real connections
live, View Configuration, Logs filtered, each at 1280 and 768 px, and every page saying so when
the appliance cannot be reached. Screenshots go to artifacts/screenshots."""

from __future__ import annotations

import asyncio
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from balancer.lab.clients import RdpSession
from tests.appliance import Guide, wait_for
from tests.browser import (
    SEEN_WITHIN,
    lab_set,
    needs_chromium,
    open_page,
    playwright,
    row,
    shoot,
)
from tests.browser import sign_in as browser_sign_in

pytestmark = needs_chromium
PAGES = {
    "system-overview": "",
    "view-configuration": "view-configuration",
    "reports": "reports",
    "logs": "logs",
}


def rdp_clients(guide: Guide, sources: list[str]) -> list[str]:
    """RDP sessions through VIP 1 from each of ``sources``, each echoing some bytes, then
    closed; the PSM server each reached. In a thread of its own: Playwright's driver keeps an
    event loop running in this one."""

    async def session(source: str) -> str:
        opened = await RdpSession.open(guide.rdp_vip, source)
        try:
            assert await opened.echo(b"x" * 4096)
        finally:
            await opened.close()
        return opened.name

    async def all_of_them() -> list[str]:
        return list(await asyncio.gather(*(session(source) for source in sources)))

    with ThreadPoolExecutor(1) as thread:
        return thread.submit(asyncio.run, all_of_them()).result()


def cell(page: Any, key: str, counter: str) -> Any:
    kind = "server" if "/" in key else "service"
    return page.locator(f'table.traffic tr[data-{kind}="{key}"] td[data-counter="{counter}"]')


def test_overview_figures_reports_configuration_and_logs(browser: Any, guide: Guide) -> None:
    page = open_page(browser, 1280, 900)
    browser_sign_in(page, guide.box)
    page.evaluate("window.notReloaded = true")

    # System Overview: the appliance's figures, and they move without a reload.
    lo = page.locator('[data-figure="bandwidth"] tr[data-interface="lo"]')
    playwright.expect(lo).to_contain_text("bit/s")  # a rate, once two reads are a second apart
    playwright.expect(page.locator('[data-figure="load"]')).to_contain_text(
        re.compile(r"1m average\s*\d+\.\d\d")
    )
    memory = page.locator('[data-figure="memory"]')
    playwright.expect(memory).to_contain_text(re.compile(r"Used\s*[\d.]+ \w+ of [\d.]+ \w+"))
    shown = memory.element_handle()
    before = lo.inner_text()
    playwright.expect(lo).not_to_have_text(before)  # the page's own refreshes cross lo
    # ... changing the values in place: the figure is the same element, not a new one.
    assert shown.evaluate("figure => figure.isConnected") is True
    assert page.evaluate("window.notReloaded") is True
    playwright.expect(row(page, "CyberArk-PSM", "PSM1")).to_have_class("rip state-online")

    # Reports: real connections counted, and more of them seen without a reload.
    reached = rdp_clients(guide, [f"127.0.95.{n}" for n in range(1, 5)])
    assert set(reached) == {"PSM1", "PSM2"}
    page.get_by_role("navigation", name="Main menu").get_by_role("link", name="Reports").click()
    page.wait_for_url("**/lbadmin/reports")
    page.evaluate("window.notReloaded = true")
    playwright.expect(cell(page, "CyberArk-PSM", "total")).to_have_text("4")
    for server in ("PSM1", "PSM2"):
        playwright.expect(cell(page, f"CyberArk-PSM/{server}", "total")).to_have_text(
            str(reached.count(server))
        )
        playwright.expect(cell(page, f"CyberArk-PSM/{server}", "bytes_out")).not_to_have_text("0 B")
    rdp_clients(guide, ["127.0.95.9", "127.0.95.10"])
    playwright.expect(cell(page, "CyberArk-PSM", "total")).to_have_text("6")
    assert page.evaluate("window.notReloaded") is True
    shoot(page, "reports")

    # View Configuration: the preset as saved and running, once, by the guide's names; the
    # built-in engine runs it as shown, so there is no second copy.
    page.get_by_role("link", name="View Configuration").click()
    stored = page.locator("#stored")
    playwright.expect(stored).to_contain_text(
        re.compile(r"As saved: revision \d+ \(the latest\), running")
    )
    playwright.expect(stored).to_contain_text("Virtual service CyberArk-PSM-Web")
    playwright.expect(stored).to_contain_text("Request to Send/psm/api/health")
    playwright.expect(page.locator("#engine")).to_have_count(0)
    revisions = page.locator("#revisions")
    playwright.expect(revisions).to_contain_text("add CyberArk PSM preset")
    playwright.expect(revisions).to_contain_text("tester")
    shoot(page, "view-configuration")

    # Logs: PSM2's failure found by its name among everything the engine logged.
    lab_set(guide, "PSM2", "fail")
    # The page shows the logs as they are when asked for: ask once the failure is logged.
    wait_for("PSM2 to fail", lambda: guide.box.server("CyberArk-PSM", "PSM2")["health"] == "down")
    page.get_by_role("link", name="Logs").click()
    page.select_option("select[name=source]", "engine")
    page.fill("input[name=text]", "psm2")
    page.get_by_role("button", name="Show").click()
    page.wait_for_url(re.compile(r".*/lbadmin/logs\?source=engine&text=psm2.*"))
    entries = page.locator("#entries tbody tr")
    playwright.expect(entries.filter(has_text="expected PASS, got FAIL").first).to_be_visible()
    for text in entries.all_inner_texts():
        assert "psm2" in text.lower(), text
    # The audit trail, one user's: the test's changes through the API, and its commit.
    page.select_option("select[name=source]", "audit")
    page.fill("input[name=text]", "")
    page.fill("input[name=user]", "tester")
    page.get_by_role("button", name="Show").click()
    playwright.expect(entries.filter(has_text="modify virtual service").first).to_be_visible()
    playwright.expect(entries.filter(has_text="commit").first).to_be_visible()
    for text in entries.all_inner_texts():
        assert "\ttester\t" in text, text
    page.goto(guide.box.webui + "logs")
    playwright.expect(entries.filter(has_text="health").first).to_be_visible()
    shoot(page, "logs")

    # The README's System Overview: PSM2 failing, and the appliance's figures under it.
    page.get_by_role("link", name="System Overview").click()
    playwright.expect(row(page, "CyberArk-PSM", "PSM2")).to_have_class("rip state-failed")
    playwright.expect(lo).to_contain_text("bit/s")
    shoot(page, "system-overview")


def test_each_page_fits_a_tablet_and_says_when_the_appliance_is_gone(
    browser: Any, guide: Guide
) -> None:
    page = open_page(browser, 768, 1024)
    browser_sign_in(page, guide.box)
    for name, path in PAGES.items():
        page.goto(guide.box.webui + path)
        playwright.expect(page.locator("main h1")).to_be_visible()
        assert page.evaluate("document.documentElement.scrollWidth") <= 768, name
        menu = page.locator("nav.menu").bounding_box()
        heading = page.locator("main h1").bounding_box()
        assert menu["y"] + menu["height"] <= heading["y"], name  # the menu sits above the page
        if name != "system-overview":  # test_webui.py keeps the overview's own
            shoot(page, f"{name}-768")

    # A page that does not refresh itself still notices, through its heartbeat.
    page.goto(guide.box.webui + "view-configuration")
    playwright.expect(page.locator("#stored")).to_be_visible()
    playwright.expect(page.locator("#unreachable")).to_be_hidden()
    guide.box.process.kill()
    guide.box.process.wait(10)
    playwright.expect(page.locator("#unreachable")).to_be_visible(timeout=SEEN_WITHIN)
    guide.box.start()
    page.wait_for_url("**/lbadmin/sign-in")  # sessions live in the daemon
