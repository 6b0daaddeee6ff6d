"""The guide's 10.1-10.3 in Chromium by keyboard, as an operator types it: Tab between fields,
type into them, Enter to submit, on an empty appliance with the lab behind it. Playwright's
fill() replaces a field's text; a person's typing is added to what the field holds, which is
how "PSM2" was once saved as "PSM2PydanticUndefined". And the "?" help, opened by keyboard,
leaves the next field visible and closes with Escape.
"""

from __future__ import annotations

from typing import Any

from tests.appliance import HOSTS, Guide
from tests.browser import needs_chromium, open_page, playwright, row, shoot, sign_in

pytestmark = needs_chromium

expect = playwright.expect
SERVICES = ("CyberArk-PSM", "CyberArk-PSM-Web")
SERVERS = ("PSM1", "PSM2")


def focused(page: Any) -> str:
    """The focused element's accessible name, as a screen reader would say it."""
    return str(
        page.evaluate(
            "() => { const e = document.activeElement;"
            " return e.getAttribute('aria-label') || (e.labels && e.labels[0]"
            " ? e.labels[0].textContent.trim() : e.textContent.trim()); }"
        )
    )


def tab_to(page: Any, name: str, *, limit: int = 80) -> None:
    """Press Tab until the control called ``name`` has focus."""
    for _ in range(limit):
        if focused(page) == name:
            return
        page.keyboard.press("Tab")
    raise AssertionError(f"{name!r} not reached by Tab; focus is on {focused(page)!r}")


def tab_order(page: Any, presses: int) -> list[str]:
    """The focused control's name, then each one Tab reaches, ``presses`` times."""
    order = [focused(page)]
    for _ in range(presses):
        page.keyboard.press("Tab")
        order.append(focused(page))
    return order


def type_into(page: Any, name: str, text: str) -> None:
    tab_to(page, name)
    page.keyboard.type(text)


def choose(page: Any, name: str, option: str) -> None:
    """Pick ``option`` in the select ``name`` with the arrow keys, as a keyboard user does."""
    tab_to(page, name)
    select = page.get_by_label(name, exact=True)
    for _ in range(20):
        if select.evaluate("s => s.options[s.selectedIndex].text") == option:
            return
        page.keyboard.press("ArrowDown")
    raise AssertionError(f"{option!r} is not a choice of {name!r}")


def enter(page: Any, url: str) -> None:
    """Press Enter and wait for the page at ``url`` to have loaded."""
    with page.expect_navigation(url=url):
        page.keyboard.press("Enter")


def follow(page: Any, link: str, url: str) -> None:
    tab_to(page, link)
    enter(page, url)


def saved_says(page: Any, text: str) -> None:
    expect(page.get_by_role("status").filter(has_text="Saved:")).to_have_text(text)


def test_the_guide_by_keyboard(bare_browser: Any, bare: Guide) -> None:
    page = open_page(bare_browser, 1280, 900)
    sign_in(page, bare.box)
    (rdp_vip, rdp), (web_vip, web) = bare.rdp_vip, bare.web_vip
    page.locator("body").focus()
    for label, ip, port, check_port in (
        ("CyberArk-PSM", rdp_vip, rdp, web),
        ("CyberArk-PSM-Web", web_vip, web, None),
    ):
        follow(page, "Layer 7 \N{EN DASH} Virtual Services", "**/lbadmin/virtual-services")
        follow(page, "Add a new Virtual Service", "**/virtual-services/add")
        type_into(page, "Label", label)
        type_into(page, "IP Address", ip)
        type_into(page, "Ports", str(port))
        enter(page, "**/lbadmin/virtual-services")
        saved_says(page, f"Saved: virtual service {label} added. Commit to put it in service.")

        follow(page, f"Modify {label}", f"**/{label}/modify")
        choose(page, "Persistence Mode", "Source IP")
        choose(page, "Health Checks", "Negotiate HTTPS (GET)")
        if check_port is not None:
            type_into(page, "Check Port", str(check_port))
        type_into(page, "Request to Send", "/psm/api/health")
        type_into(page, "Response Expected", "PASS")
        # The guide's 4 s interval works; a short one keeps the test quick. Typed after
        # selecting what the field holds, as a person replaces a value.
        tab_to(page, "Check Interval")
        page.keyboard.press("Control+A")
        page.keyboard.type("0.2")
        enter(page, "**/lbadmin/virtual-services")
        saved_says(page, f"Saved: virtual service {label} modified. Commit to put it in service.")

    for service, port in (("CyberArk-PSM", rdp), ("CyberArk-PSM-Web", web)):
        for server in SERVERS:
            follow(page, "Layer 7 \N{EN DASH} Real Servers", "**/lbadmin/real-servers")
            follow(page, f"Add a new Real Server to {service}", f"**/{service}/add")
            type_into(page, "Label", server)
            type_into(page, "Real Server IP Address", HOSTS[server])
            type_into(page, "Real Server Port", str(port))
            enter(page, "**/lbadmin/real-servers")
            saved_says(
                page,
                f"Saved: real server {server} added to {service}. Commit to put it in service.",
            )
    shoot(page, "keyboard-real-servers")

    saved = bare.box.client.get("/config")["virtual_services"]
    assert [vs["label"] for vs in saved] == list(SERVICES)
    for vs, check_port in zip(saved, (web, None), strict=True):
        check = vs["health_check"]
        assert vs["persistence"]["mode"] == "source_ip"
        assert (check["type"], check["method"], check["port"]) == ("https", "GET", check_port)
        assert (check["path"], check["expect"]) == ("/psm/api/health", "PASS")
        # Exactly as typed: nothing the form held before was sent with it.
        assert [(rs["label"], rs["ip"]) for rs in vs["real_servers"]] == [
            (server, HOSTS[server]) for server in SERVERS
        ]

    # The "Commit changes" box, by keyboard.
    commit = page.locator("#commit-box").get_by_role("button", name="Commit")
    tab_to(page, "Commit")
    commit.press("Enter")
    expect(page.locator("#commit-box")).to_contain_text("running")
    follow(page, "System Overview", "**/lbadmin/")
    for service in SERVICES:
        for server in SERVERS:
            expect(row(page, service, server)).to_have_class("rip state-online")


def test_help_opened_by_keyboard_leaves_the_next_field_in_view_and_closes_with_escape(
    bare_browser: Any, bare: Guide
) -> None:
    rdp_vip, rdp = bare.rdp_vip
    check = {"type": "https", "method": "GET", "path": "/psm/api/health", "expect": "PASS"}
    service = {"label": "CyberArk-PSM", "ip": rdp_vip, "ports": str(rdp), "health_check": check}
    bare.box.client.post("/virtual-services", service)
    page = open_page(bare_browser, 1280, 800)
    sign_in(page, bare.box)
    page.goto(f"{bare.box.webui}virtual-services/CyberArk-PSM/modify")
    tab_to(page, "Check Port")
    page.keyboard.press("Tab")
    assert focused(page) == "Help: Check Port"
    page.keyboard.press("Enter")
    help_text = page.locator("#f-health_check-port-help")
    expect(help_text).to_be_visible()
    expect(help_text).to_contain_text("RDP does not answer HTTPS")
    shoot(page, "virtual-service-modify")
    for name in ("Request to Send", "Response Expected"):
        box = page.get_by_label(name, exact=True).bounding_box()
        centre = (box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        on_top = page.evaluate("([x, y]) => document.elementFromPoint(x, y).id", centre)
        assert on_top == page.get_by_label(name, exact=True).get_attribute("id"), name
    page.keyboard.press("Escape")
    expect(help_text).to_be_hidden()
    assert focused(page) == "Help: Check Port"
    page.keyboard.press("Tab")
    assert focused(page) == "Request to Send"
