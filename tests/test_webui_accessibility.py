"""Every WebUI page through axe-core, the accessibility checker, in a real browser against the
whole appliance with the guide's setup: no page may have a violation of serious or critical
impact (missing names and labels, too little contrast, broken landmarks and the like).

axe-core comes from the npm registry, pinned in tests/axe/package-lock.json; `make test`
installs it (`npm ci --prefix tests/axe`). One appliance and one signed-in browser serve every
page; each page is a test of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.appliance import Guide, guide_setup, wait_for
from tests.browser import chromium, lab_set, needs_chromium, open_page, playwright, sign_in

AXE = Path(__file__).parent / "axe" / "node_modules" / "axe-core" / "axe.min.js"
SERIOUS = ("serious", "critical")

pytestmark = [
    needs_chromium,
    pytest.mark.skipif(
        not AXE.exists(),
        reason="needs axe-core: `make test` installs it (npm ci --prefix tests/axe)",
    ),
]

# The page's violations of the impacts asked for, each with the elements that have it and why.
RUN_AXE = """async (impacts) => {
  const results = await axe.run(document, {resultTypes: ["violations"]});
  return results.violations
    .filter((rule) => impacts.includes(rule.impact))
    .map((rule) => ({
      id: rule.id,
      impact: rule.impact,
      help: rule.help,
      targets: rule.nodes.map((node) => `${node.target.join(" ")}: ${node.failureSummary}`),
    }));
}"""


@pytest.fixture(scope="module")
def shown(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Guide, Any]]:
    """The guide's appliance with real servers online, draining and failed and a change not yet
    committed (so that every page shows the Commit box), and a browser signed in to it (the CSP
    bypassed: axe-core is injected as an inline script)."""
    with guide_setup(tmp_path_factory.mktemp("accessibility")) as guide:
        box = guide.box
        lab_set(guide, "PSM2", "fail")
        box.client.post(
            "/virtual-services/CyberArk-PSM-Web/real-servers/PSM1/state", {"state": "drain"}
        )
        wait_for("PSM2 to fail", lambda: box.server("CyberArk-PSM", "PSM2")["health"] == "down")
        box.client.patch("/virtual-services/CyberArk-PSM/real-servers/PSM1", {"weight": 50})
        with chromium() as browser:
            page = open_page(browser, 1280, 900, bypass_csp=True)
            sign_in(page, box)
            yield guide, page


def signed_out(guide: Guide, page: Any) -> Any:
    """The sign-in page, in a browser of its own that has no session."""
    fresh = open_page(page.context.browser, 1280, 900, bypass_csp=True)
    fresh.goto(guide.box.webui)
    fresh.wait_for_url("**/lbadmin/sign-in")
    return fresh


def confirming(action: str) -> Callable[[Guide, Any], Any]:
    """Restart Services' confirmation of ``action``, asked for by its button (not confirmed)."""

    def shown_page(guide: Guide, page: Any) -> Any:
        page.goto(guide.box.webui + "maintenance/restart")
        page.locator(f"#action-{action} button[type=submit]").click()
        playwright.expect(page.get_by_role("alertdialog")).to_be_visible()
        return page

    return shown_page


def refused(guide: Guide, page: Any) -> Any:
    """Add a new Real Server, typed in by an operator with a label and an address it refuses."""
    page.goto(guide.box.webui + "real-servers/CyberArk-PSM/add")
    label, address = page.locator("#f-label"), page.locator("#f-ip")
    label.click()
    label.press_sequentially("PSM 3")
    address.click()
    address.press_sequentially("192.168.1")
    page.keyboard.press("Enter")
    playwright.expect(page.locator(".field.invalid").first).to_be_visible()
    return page


def helped(guide: Guide, page: Any) -> Any:
    """Modify Virtual Service with a field's "?" help open, as a click on it leaves it."""
    page.goto(guide.box.webui + "virtual-services/CyberArk-PSM/modify")
    page.get_by_role("group", name="Health Checks").locator("summary").first.click()
    playwright.expect(page.locator(".help-text").filter(visible=True)).to_have_count(1)
    return page


def unknown(guide: Guide, page: Any) -> Any:
    """An address that is no page: a page with the menu to go on from, not the API's JSON."""
    answer = page.goto(guide.box.webui + "no-such-page")
    assert answer.status == 404
    playwright.expect(page.get_by_role("navigation", name="Main menu")).to_be_visible()
    return page


def at(path: str) -> Callable[[Guide, Any], Any]:
    def shown_page(guide: Guide, page: Any) -> Any:
        page.goto(guide.box.webui + path)
        return page

    return shown_page


def asked(guide: Guide, page: Any) -> Any:
    """System Overview asking before PSM1 is drained: PSM2 fails, so none would be left up."""
    page.goto(guide.box.webui + "overview/confirm?service=CyberArk-PSM&server=PSM1&state=drain")
    playwright.expect(page.get_by_text("will stop taking new users")).to_be_visible()
    return page


# Every page of the WebUI, as the operator reaches it.
PAGES: dict[str, Callable[[Guide, Any], Any]] = {
    "sign-in": signed_out,
    "system-overview": at(""),
    "drain-last-server-confirm": asked,
    "local-configuration": at("local-configuration"),
    "alerts": at("local-configuration/alerts"),
    "virtual-services": at("virtual-services"),
    "virtual-service-add": at("virtual-services/add"),
    "virtual-service-modify": at("virtual-services/CyberArk-PSM/modify"),
    "virtual-service-help": helped,
    "virtual-service-delete": at("virtual-services/CyberArk-PSM/delete"),
    "real-servers": at("real-servers"),
    "real-server-add": at("real-servers/CyberArk-PSM/add"),
    "real-server-modify": at("real-servers/CyberArk-PSM/PSM1/modify"),
    "real-server-delete": at("real-servers/CyberArk-PSM/PSM1/delete"),
    "real-server-refused": refused,
    "setup-wizard": at("wizards/layer-7"),
    "psm-wizard": at("wizards/psm"),
    "backup-restore": at("maintenance/backup"),
    "restart-services": at("maintenance/restart"),
    "restart-engine-confirm": confirming("engine"),
    "restart-management-confirm": confirming("management"),
    "passwords": at("maintenance/passwords"),
    "view-configuration": at("view-configuration"),
    "reports": at("reports"),
    "logs": at("logs"),
    "unknown-page": unknown,
}


@pytest.mark.parametrize("name", PAGES)
def test_no_serious_accessibility_violation(name: str, shown: tuple[Guide, Any]) -> None:
    guide, page = shown
    checked = PAGES[name](guide, page)
    url = checked.url
    try:
        checked.add_script_tag(path=str(AXE))
        violations = checked.evaluate(RUN_AXE, list(SERIOUS))
    finally:
        if checked is not page:
            checked.context.close()
    found = "\n".join(
        f"{v['impact']} {v['id']}: {v['help']}\n    " + "\n    ".join(v["targets"])
        for v in violations
    )
    assert not violations, f"{name} ({url}):\n{found}"
