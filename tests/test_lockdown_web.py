"""Local Configuration > Management lockdown by keyboard in Chromium: a list that would shut out
the browser's own address is refused naming it, a network with host bits is refused at its
entry, what was typed is kept to correct, and a list that holds the browser is saved."""

from __future__ import annotations

from pathlib import Path

from tests.appliance import appliance
from tests.browser import chromium, needs_chromium, open_page, playwright, sign_in

LABEL = "Networks that may reach the WebUI and the API"


@needs_chromium
def test_the_lockdown_form_typed_by_keyboard(tmp_path: Path) -> None:
    with appliance(tmp_path) as box, chromium() as browser:
        page = open_page(browser, 1024, 900)
        sign_in(page, box)
        page.goto(f"{box.webui}local-configuration")
        playwright.expect(page.locator("#your-address")).to_have_text("127.0.0.1")
        networks = page.get_by_label(LABEL)
        networks.click()
        page.keyboard.type("10.0.0.0/8")  # this browser is at 127.0.0.1: refused
        page.keyboard.press("Tab")  # to Save
        page.keyboard.press("Enter")
        alert = page.get_by_role("alert")
        playwright.expect(alert).to_contain_text("management_allow")
        playwright.expect(alert).to_contain_text("would lock out 127.0.0.1")
        playwright.expect(networks).to_have_value("10.0.0.0/8")  # kept, to correct
        assert box.client.get("/lockdown")["management_allow"] == []

        networks.focus()
        page.keyboard.press("Control+A")
        page.keyboard.type("127.0.0.1/8")  # host bits set
        page.keyboard.press("Tab")
        page.keyboard.press("Enter")
        playwright.expect(page.get_by_role("alert")).to_contain_text("management_allow[0]")
        playwright.expect(networks).to_have_value("127.0.0.1/8")

        networks.focus()
        page.keyboard.press("End")
        for _ in range(3):
            page.keyboard.press("Backspace")
        page.keyboard.type("0/8")
        page.keyboard.press("Tab")
        page.keyboard.press("Enter")
        playwright.expect(page.get_by_role("status")).to_contain_text(
            "The networks that may manage this node were saved"
        )
        playwright.expect(networks).to_have_value("127.0.0.0/8")
        assert box.client.get("/lockdown")["management_allow"] == ["127.0.0.0/8"]
