"""The WebUI in a real browser (Debian's chromium, driven by Playwright) against the whole
appliance and the lab: sign in, watch System Overview, see a failing PSM server go red with its
reason without reloading, drain it from the overview. Screenshots go to artifacts/screenshots.
"""

from __future__ import annotations

from typing import Any

from tests.appliance import Guide, wait_for
from tests.browser import (
    lab_set,
    needs_chromium,
    open_page,
    playwright,
    row,
    shoot,
    sign_in,
)

pytestmark = needs_chromium


def test_sign_in_watch_a_server_fail_and_drain_it(browser: Any, guide: Guide) -> None:
    page = open_page(browser, 1280, 800)
    sign_in(page, guide.box, screenshot="sign-in")
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
    sign_in(page, guide.box)
    box = page.locator("#commit-box")
    playwright.expect(box).to_contain_text(
        "Change Weight of real server PSM2 in CyberArk-PSM-Web from 100 to 50"
    )
    shoot(page, "commit-changes")
    box.get_by_role("button", name="Commit").click()
    playwright.expect(box).to_contain_text("is running")
    wait_for("the commit", lambda: guide.box.server("CyberArk-PSM-Web", "PSM2")["weight"] == 50)


def test_tablet_width_and_an_unreachable_appliance(browser: Any, guide: Guide) -> None:
    page = open_page(browser, 768, 1024)
    sign_in(page, guide.box, screenshot="sign-in-768")
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
