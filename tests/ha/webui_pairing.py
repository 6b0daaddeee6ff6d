"""The guide's 14.1.2 in Chromium, run by ``tests/ha/test_pair_webui.py`` inside the client's
network namespace (Playwright's browser cannot reach the nodes from outside it): sign in to the
Primary's WebUI, fill Cluster Configuration > High-Availability Configuration's form, check the
fingerprint it shows against the one the peer's ``balancer serve`` printed, confirm it, Add new
node, and wait for the paired page. It prints what the page showed at the end, one line each.

``python -m tests.ha.webui_pairing URL LOCAL PEER PORT PASSWORD FINGERPRINT``; exit status 0
once the page says the pair is made.
"""

from __future__ import annotations

import sys

from tests.browser import chromium, open_page, playwright


def main(url: str, local: str, peer: str, port: str, password: str, fingerprint: str) -> int:
    expect = playwright.expect
    with chromium() as launched:
        page = open_page(launched, 1280, 900)
        page.goto(url)
        page.get_by_label("Username").fill("loadbalancer")
        page.get_by_label("Password").fill(password)
        with page.expect_navigation(url="**/lbadmin/"):
            page.get_by_role("button", name="Sign in").click()
        page.goto(url + "high-availability")
        page.locator("#f-local-address").select_option(local)
        page.locator("#f-peer-address").fill(peer)
        page.locator("#f-peer-address").dispatch_event("change")
        page.locator("#f-peer-port").fill(port)
        page.locator("#f-peer-port").dispatch_event("change")
        page.locator("#f-password").fill(password)
        shown = page.locator("#peer-fingerprint")
        expect(shown).to_have_text(fingerprint)
        page.locator("#f-fingerprint").check()
        with page.expect_navigation(url="**/lbadmin/high-availability"):
            page.get_by_role("button", name="Add new node").click()
        paired = page.get_by_role("heading", name="High Availability Configuration - primary")
        expect(paired).to_be_visible(timeout=60_000)
        print(paired.inner_text())
        print(page.locator("dd[data-node=secondary]").inner_text())
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
