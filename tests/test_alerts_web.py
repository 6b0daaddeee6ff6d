"""Local Configuration > Alerts in the WebUI: a channel added from its form (its secret never
shown back), refused naming the field, tested with Send test, and removed."""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Any

import httpx

from balancer.store import Store
from tests.appliance import appliance
from tests.browser import SCREENSHOTS, chromium, needs_chromium, open_page, playwright, sign_in
from tests.test_webui_accessibility import AXE, RUN_AXE, SERIOUS
from tests.webapp import webapp

PAGE = "/lbadmin/local-configuration/alerts"
PASSWORD = "planted-smtp-password-3"


def test_add_test_and_remove_alert_channels_in_the_webui(tmp_path: Path) -> None:
    with webapp(tmp_path) as app, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        udp.settimeout(10)
        with socket.socket() as unused:  # a port nothing listens on: Send test fails there
            unused.bind(("127.0.0.1", 0))
            closed = str(unused.getsockname()[1])
        csrf = app.sign_in()
        web = app.network
        menu = web.get("/lbadmin/local-configuration").text
        assert f'<a href="{PAGE}">Alerts</a>' in menu
        email = {
            "csrf_token": csrf,
            "kind": "email",
            "name": "ops-mail",
            "email_host": "127.0.0.1",
            "email_port": closed,
            "email_starttls": "on",
            "email_username": "lb1",
            "secret": PASSWORD,
            "email_sender": "lb1@example.com",
            "email_recipients": "ops@example.com noc@example.com",
        }
        added = web.post(f"{PAGE}/add", data=email, follow_redirects=False)
        assert (added.status_code, added.headers["location"]) == (
            303,
            f"{PAGE}?done=added&name=ops-mail",
        )
        (saved,) = app.store.alert_channels()
        assert saved[1]["recipients"] == ["ops@example.com", "noc@example.com"]
        assert saved[2] == PASSWORD
        bad = web.post(f"{PAGE}/add", data={**email, "name": "m2", "email_sender": "nobody"})
        assert bad.status_code == 422
        assert "<code>settings.email.sender</code>" in bad.text
        assert 'value="lb1"' in bad.text, "what was typed is kept to correct"

        syslog = {
            "csrf_token": csrf,
            "kind": "syslog",
            "name": "siem",
            "syslog_transport": "udp",
            "syslog_host": "127.0.0.1",
            "syslog_port": str(udp.getsockname()[1]),
        }
        assert web.post(f"{PAGE}/add", data=syslog, follow_redirects=False).status_code == 303
        edit = web.get(PAGE, params={"edit": "siem"}).text
        assert f'value="{syslog["syslog_port"]}"' in edit
        assert web.get(PAGE, params={"edit": "nope"}).status_code == 404
        gone = web.post(f"{PAGE}/nope/change", data={**syslog, "syslog_port": "1"})
        assert (gone.status_code, "no alert channel named nope" in gone.text) == (404, True)
        tested = web.post(f"{PAGE}/siem/test", data={"csrf_token": csrf})
        assert "A test alert was sent through siem." in tested.text
        assert b"balancer - test - test alert from" in udp.recv(4096)
        failed = web.post(f"{PAGE}/ops-mail/test", data={"csrf_token": csrf})
        assert failed.status_code == 502
        assert "ops-mail: not sent: ConnectionRefusedError" in failed.text
        listing = web.get(PAGE).text
        assert "ops-mail" in listing
        assert f"127.0.0.1:{closed} to ops@example.com, noc@example.com" in listing
        assert web.post(f"{PAGE}/ops-mail/remove", data={"csrf_token": csrf}).status_code == 200
        assert [name for name, _, _ in app.store.alert_channels()] == ["siem"]
        pages = [menu, added.text, bad.text, tested.text, failed.text, listing]
    assert not [page for page in pages if PASSWORD in page]


@needs_chromium
def test_a_webhook_and_the_scraping_networks_typed_by_keyboard(tmp_path: Path) -> None:
    """A person at the keyboard: each field typed and left with Tab, each form sent with
    Enter; a bad network refused at its field, what was typed kept to correct."""
    with appliance(tmp_path) as box, chromium() as browser:
        page = open_page(browser, 1024, 900, bypass_csp=True)
        sign_in(page, box)
        page.goto(f"{box.webui}local-configuration/alerts")
        page.locator("#webhook-name").click()
        for text in ("ops-hook", "https://127.0.0.1:9/hook", "typed-hmac-key-5"):
            page.keyboard.type(text)  # key by key, as press_sequentially does
            page.keyboard.press("Tab")
        page.keyboard.press("Enter")  # Tab has reached Add
        row = page.get_by_role("row", name=re.compile("ops-hook"))
        playwright.expect(row).to_contain_text("https://127.0.0.1:9/hook")
        playwright.expect(row).to_contain_text("set")
        assert "typed-hmac-key-5" not in page.content()
        channels = box.client.get("/alerts/channels")
        assert [(c["name"], c["secret"]) for c in channels] == [("ops-hook", "set")]

        # Edit: the URL changed by keyboard, the key left empty: the saved one is kept.
        mail = {"name": "ops-mail", "kind": "email", "host": "smtp.example.com",
                "username": "lb1", "sender": "lb1@example.com",
                "recipients": ["ops@example.com"], "ca_file": "/etc/ssl/ops-ca.pem"}  # fmt: skip
        box.client.post("/alerts/channels", mail)
        page.goto(f"{box.webui}local-configuration/alerts")
        page.get_by_role("link", name="Edit ops-hook").focus()
        page.keyboard.press("Enter")
        playwright.expect(page.get_by_role("heading", name="Change ops-hook")).to_be_visible()
        url = page.get_by_label("URL").first
        playwright.expect(url).to_have_value("https://127.0.0.1:9/hook")
        playwright.expect(page.locator("#edit-webhook-secret")).to_have_value("")
        url.focus()
        page.keyboard.press("Control+A")
        page.keyboard.type("https://127.0.0.1:9/v2")
        page.keyboard.press("Tab")  # the key, left empty
        page.keyboard.press("Tab")  # Save
        page.keyboard.press("Enter")
        playwright.expect(page.get_by_role("status")).to_have_text(
            "Alert channel ops-hook changed."
        )
        playwright.expect(row).to_contain_text("https://127.0.0.1:9/v2")
        playwright.expect(row).to_contain_text("set")
        # The e-mail's From refused at its field, then its user emptied: what no form shows
        # (its CA file) is kept.
        page.get_by_role("link", name="Edit ops-mail").focus()
        page.keyboard.press("Enter")
        sender = page.locator("#edit-email-from")
        sender.focus()
        page.keyboard.press("Control+A")
        page.keyboard.type("nobody")
        page.keyboard.press("Enter")
        playwright.expect(page.get_by_role("alert")).to_contain_text("settings.email.sender")
        playwright.expect(sender).to_have_value("nobody")
        sender.focus()
        page.keyboard.press("Control+A")
        page.keyboard.type("lb2@example.com")
        page.locator("#edit-email-user").focus()
        page.keyboard.press("Control+A")
        page.keyboard.press("Delete")
        page.keyboard.press("Enter")
        playwright.expect(page.get_by_role("status")).to_have_text(
            "Alert channel ops-mail changed."
        )
        changed = {c["name"]: c for c in box.client.get("/alerts/channels")}
        assert (changed["ops-mail"]["sender"], changed["ops-mail"]["username"]) == (
            "lb2@example.com",
            "",
        )
        assert changed["ops-mail"]["ca_file"] == "/etc/ssl/ops-ca.pem"
        with Store(box.data_dir / "balancer.db") as store:
            assert dict((n, secret) for n, _, secret in store.alert_channels()) == {
                "ops-hook": "typed-hmac-key-5",
                "ops-mail": "",
            }
        # The README's docs/images/alerts.png: the channels and the webhook's Edit form.
        page.get_by_role("link", name="Edit ops-hook").focus()
        page.keyboard.press("Enter")
        playwright.expect(page.get_by_role("heading", name="Change ops-hook")).to_be_visible()
        shoot_part(page, "#alert-channels, #edit-channel", "alerts")
        if AXE.exists():  # the accessibility test sees the page with no channel to edit
            page.add_script_tag(path=str(AXE))
            assert page.evaluate(RUN_AXE, list(SERIOUS)) == []

        metrics = box.webui.replace("/lbadmin/", "/metrics")
        assert httpx.get(metrics, verify=False).status_code == 401  # a key is needed
        page.goto(f"{box.webui}local-configuration")
        label = "Networks that may scrape without an API key"
        page.get_by_label(label).click()
        page.keyboard.type("127.0.0.1/8")  # host bits set: refused
        page.keyboard.press("Tab")  # to Save
        page.keyboard.press("Enter")
        playwright.expect(page.get_by_role("alert")).to_contain_text("metrics_allow[0]")
        networks = page.get_by_label(label)
        playwright.expect(networks).to_have_value("127.0.0.1/8")  # kept, to correct
        assert httpx.get(metrics, verify=False).status_code == 401
        networks.click()
        networks.press("End")
        for _ in range(3):
            networks.press("Backspace")
        networks.press_sequentially("0/8")
        page.keyboard.press("Tab")
        page.keyboard.press("Enter")
        playwright.expect(page.get_by_text("were saved")).to_be_visible()
        assert httpx.get(metrics, verify=False).status_code == 200
        # The README's docs/images/prometheus.png.
        shoot_part(page, "#prometheus", "prometheus")


def shoot_part(page: Any, sections: str, name: str) -> None:
    """The sections of a page, one picture from the first's top to the last's bottom."""
    page.evaluate("window.scrollTo(0, 0)")  # boxes are where the view is; the clip, the page
    boxes = [part.bounding_box() for part in page.locator(sections).all()]
    top, bottom = min(b["y"] for b in boxes), max(b["y"] + b["height"] for b in boxes)
    left, right = min(b["x"] for b in boxes), max(b["x"] + b["width"] for b in boxes)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    clip = {"x": left, "y": top, "width": right - left, "height": bottom - top}
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), clip=clip, full_page=True)
