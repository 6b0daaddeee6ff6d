"""System Overview as an operator meets it: states in words and shapes, the table's columns,
the refresh that keeps the keyboard where it is, the question before the last real server that
is up is taken out, the banner of a hung appliance, and the first run's Setup Wizard offer.

In process on the fake engine first (quick); then in Debian's chromium against the whole
appliance and the lab, by keyboard, while the page refreshes itself.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from balancer.overview import leaves_none_up
from tests.appliance import Guide, appliance, wait_for
from tests.browser import (
    chromium,
    lab_set,
    needs_chromium,
    open_page,
    playwright,
    row,
    shoot,
    sign_in,
)
from tests.webapp import WebApp, csrf_of, webapp

STATIC_DIR = Path(__file__).parent.parent / "balancer" / "web" / "static"
VIP = {"label": "CyberArk-PSM", "ip": "192.168.94.100", "ports": "3389"}
SERVERS = ({"label": "PSM1", "ip": "192.168.94.105"}, {"label": "PSM2", "ip": "192.168.94.106"})
ASKED = "CyberArk-PSM will stop taking new users: no other real server is up."
# balancer.js: the most a poll waits for an answer; the overview polls every 2 s.
POLL_TIME_LIMIT = 5.0
POLL_EVERY = 2.0


# --- pure ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("servers", "server", "asks"),
    [
        ({"PSM1": "online", "PSM2": "online"}, "PSM2", False),
        ({"PSM1": "failed", "PSM2": "online"}, "PSM2", True),
        ({"PSM1": "drain", "PSM2": "online", "PSM3": "halt"}, "PSM2", True),
        ({"PSM1": "failed", "PSM2": "failed"}, "PSM2", False),  # it takes nobody already
        ({"PSM1": "online", "PSM2": "drain"}, "PSM2", False),
        ({"PSM2": "online"}, "PSM2", True),
        ({"PSM1": "online"}, "PSM9", False),
    ],
)
def test_leaves_none_up(servers: dict[str, str], server: str, asks: bool) -> None:
    assert leaves_none_up(servers, server) is asks


def test_every_vendored_script_is_the_one_recorded() -> None:
    recorded = (STATIC_DIR / "VENDORED.md").read_text()
    vendored = sorted(STATIC_DIR.glob("*.min.js"))
    assert [path.name for path in vendored] == ["htmx.min.js", "idiomorph-ext.min.js"]
    for path in vendored:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert f"sha256 of `{path.name}`: `{digest}`" in recorded


# --- in process, on the fake engine ----------------------------------------------------------


@pytest.fixture
def app(tmp_path: Path) -> Iterator[WebApp]:
    with webapp(tmp_path) as running:
        running.sign_in()
        yield running


def configured(app: WebApp) -> None:
    """The guide's VIP 1 with PSM1 and PSM2, committed."""
    as_alice = {"X-Balancer-User": "alice"}
    assert app.local.post("/api/v1/virtual-services", json=VIP, headers=as_alice).is_success
    for server in SERVERS:
        path = "/api/v1/virtual-services/CyberArk-PSM/real-servers"
        assert app.local.post(path, json=server, headers=as_alice).is_success
    assert app.local.post("/api/v1/commit", headers=as_alice).is_success


def words(page: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))


def row_words(page: str, marked: str) -> str:
    """The words of the table row whose tag has ``marked``."""
    start = page.index(">", page.index(marked)) + 1
    return words(page[start : page.index("</tr>", start)])


def state_form(app: WebApp, server: str, state: str, **more: str) -> dict[str, str]:
    token = csrf_of(app.network.get("/lbadmin/").text)
    return {
        "csrf_token": token,
        "service": "CyberArk-PSM",
        "server": server,
        "state": state,
        **more,
    }


def running_state(app: WebApp, server: str) -> str:
    engine = app.local.get("/api/v1/status").json()["engine"]
    servers = engine["virtual_services"][0]["real_servers"]
    state: str = next(rs["state"] for rs in servers if rs["label"] == server)
    return state


def test_states_are_words_and_each_cell_has_its_heading(app: WebApp) -> None:
    configured(app)
    app.engine.failed["CyberArk-PSM/PSM2"] = "expected PASS, got FAIL"
    page = app.network.get("/lbadmin/overview/live").text
    assert ">STATE</th>" in page
    service = row_words(page, 'data-service="CyberArk-PSM"').split()
    assert service == [
        "degraded",
        "CyberArk-PSM",
        "192.168.94.100",
        "3389",
        "0",
        "TCP",
        "Layer",
        "7",
        "Proxy",
    ]
    # The real servers' own heading row, then the rows under it, cell for cell.
    assert row_words(page, 'class="rip-head"').split() == [
        "REAL", "SERVER", "IP", "PORT", "CONNS", "WEIGHT", "ACTIONS",
    ]  # fmt: skip
    assert row_words(page, 'data-server="CyberArk-PSM/PSM1"').split()[:6] == [
        "online", "PSM1", "192.168.94.105", "3389", "0", "100",
    ]  # fmt: skip
    assert row_words(page, 'data-server="CyberArk-PSM/PSM2"').startswith(
        " failed expected PASS, got FAIL PSM2 "
    )
    assert page.count('class="mark" aria-hidden="true"') == 3  # a shape beside every word


def test_draining_the_last_server_up_asks_first(app: WebApp) -> None:
    configured(app)
    app.engine.failed["CyberArk-PSM/PSM1"] = "connection refused"
    htmx = {"HX-Request": "true"}
    asked = app.network.post(
        "/lbadmin/overview/state", data=state_form(app, "PSM2", "drain"), headers=htmx
    )
    question = "/lbadmin/overview/confirm?service=CyberArk-PSM&server=PSM2&state=drain"
    assert asked.headers["HX-Redirect"] == question
    plain = app.network.post(
        "/lbadmin/overview/state", data=state_form(app, "PSM2", "halt"), follow_redirects=False
    )
    assert plain.status_code == 303
    assert plain.headers["location"] == question.replace("drain", "halt")
    assert running_state(app, "PSM2") == "online"  # asking changed nothing

    page = app.network.get(question).text
    assert ASKED in words(page)
    assert "Yes, drain PSM2" in page
    assert 'href="/lbadmin/#server:CyberArk-PSM/PSM2" autofocus>Cancel' in page
    done = app.network.post(
        "/lbadmin/overview/state",
        data=state_form(app, "PSM2", "drain", confirm="1"),
        follow_redirects=False,
    )
    assert done.status_code == 303
    assert done.headers["location"] == "/lbadmin/#server:CyberArk-PSM/PSM2"
    assert running_state(app, "PSM2") == "drain"
    # The API and the command line are not asked: they act at once.
    app.local.post(
        "/api/v1/virtual-services/CyberArk-PSM/real-servers/PSM2/state", json={"state": "online"}
    )
    assert running_state(app, "PSM2") == "online"
    assert app.local.post(
        "/api/v1/virtual-services/CyberArk-PSM/real-servers/PSM2/state", json={"state": "halt"}
    ).is_success
    assert running_state(app, "PSM2") == "halt"


def test_the_button_of_the_state_it_is_in_does_nothing(app: WebApp) -> None:
    configured(app)
    before = app.store.head().id
    again = app.network.post(
        "/lbadmin/overview/state",
        data=state_form(app, "PSM1", "online"),
        headers={"HX-Request": "true"},
    )
    assert again.status_code == 200
    assert 'value="online" aria-disabled="true"' in again.text
    assert app.store.head().id == before


def test_the_setup_wizard_is_offered_until_dismissed(app: WebApp) -> None:
    offer = "Would you like to run the Setup Wizard?"
    page = app.network.get("/lbadmin/").text
    assert offer in page
    assert '<a class="button primary" href="/lbadmin/wizards/layer-7">Accept</a>' in page
    dismissed = app.network.post(
        "/lbadmin/overview/setup-wizard/dismiss",
        data={"csrf_token": csrf_of(page)},
        follow_redirects=False,
    )
    assert dismissed.status_code == 303
    assert offer not in app.network.get("/lbadmin/").text
    assert app.store.node_settings().setup_wizard_dismissed
    audited = app.store.audit_log(limit=1)[0]
    assert (audited.author, audited.action) == ("loadbalancer", "node_settings")
    # Kept across sign-ins, and a configured appliance is never offered it.
    app.network.cookies.clear()
    app.sign_in()
    assert offer not in app.network.get("/lbadmin/").text


def test_a_configured_appliance_is_not_offered_the_setup_wizard(app: WebApp) -> None:
    configured(app)
    assert "Setup Wizard" not in app.network.get("/lbadmin/").text


# --- in a real browser, against the appliance and the lab ------------------------------------


def focused_row(page: Any) -> str | None:
    """The real server whose row has the keyboard focus, if any."""
    found: str | None = page.evaluate(
        "document.activeElement.closest('tr[data-server]')?.dataset.server ?? null"
    )
    return found


def focused(page: Any) -> str:
    text: str = page.evaluate("document.activeElement.textContent.trim()")
    return text


def tab_to(page: Any, text: str, where: str | None = None, *, back: bool = False) -> None:
    """Tab (or Shift+Tab) until the focus is on ``text`` (in ``where``'s row, if given)."""
    for _ in range(80):
        if focused(page) == text and (where is None or focused_row(page) == where):
            return
        page.keyboard.press("Shift+Tab" if back else "Tab")
    raise AssertionError(f"{text} in {where} not reached by keyboard; at {focused(page)!r}")


def count_refreshes(page: Any) -> None:
    """From now on, window.refreshed counts System Overview's refreshes swapped in."""
    page.evaluate(
        """window.refreshed = 0;
           document.body.addEventListener('htmx:afterSettle', (e) => {
             if (e.detail.pathInfo.requestPath.endsWith('/overview/live')) window.refreshed++;
           });"""
    )


def stays_in_row(page: Any, where: str) -> None:
    """At least two refreshes later, the keyboard is still in ``where``'s row."""
    now = page.evaluate("window.refreshed")
    page.wait_for_function("(wanted) => window.refreshed >= wanted", arg=now + 2)
    assert focused_row(page) == where, focused(page)


@needs_chromium
def test_drain_halt_and_online_by_keyboard_while_it_refreshes(browser: Any, guide: Guide) -> None:
    box = guide.box
    psm2 = "CyberArk-PSM/PSM2"
    page = open_page(browser, 1280, 900)
    sign_in(page, box)
    count_refreshes(page)
    page.evaluate(
        "window.blocked = []; document.addEventListener("
        "'securitypolicyviolation', e => blocked.push(e.violatedDirective))"
    )
    playwright.expect(row(page, "CyberArk-PSM", "PSM2")).to_have_class("rip state-online")
    page.keyboard.press("Tab")
    tab_to(page, "Drain", psm2)
    page.keyboard.press("Enter")
    wait_for("PSM2 drained", lambda: box.server("CyberArk-PSM", "PSM2")["state"] == "drain")
    stays_in_row(page, psm2)
    assert focused(page) == "Drain"
    playwright.expect(row(page, "CyberArk-PSM", "PSM2")).to_contain_text("drain")

    tab_to(page, "Halt", psm2)
    page.keyboard.press("Space")
    wait_for("PSM2 halted", lambda: box.server("CyberArk-PSM", "PSM2")["state"] == "halt")
    stays_in_row(page, psm2)
    playwright.expect(row(page, "CyberArk-PSM", "PSM2")).to_contain_text("halt")

    tab_to(page, "Online", psm2)
    page.keyboard.press("Enter")
    wait_for("PSM2 online", lambda: box.server("CyberArk-PSM", "PSM2")["state"] == "online")
    stays_in_row(page, psm2)
    assert page.evaluate("window.blocked") == []  # the morph runs under the CSP

    # PSM1 fails: PSM2 is the last one up, and taking it out asks first.
    lab_set(guide, "PSM1", "fail")
    playwright.expect(row(page, "CyberArk-PSM", "PSM1")).to_have_class("rip state-failed")
    tab_to(page, "Drain", psm2, back=True)
    page.keyboard.press("Enter")
    page.wait_for_url("**/lbadmin/overview/confirm?*")
    playwright.expect(page.get_by_role("alertdialog")).to_contain_text(ASKED)
    # The safe answer is the one Enter gives (autofocus lands after load: wait for it as an
    # operator waits to see the focus before pressing a key).
    playwright.expect(page.get_by_role("link", name="Cancel")).to_be_focused()
    tab_to(page, "Yes, drain PSM2", back=True)
    page.keyboard.press("Enter")
    page.wait_for_url("**/lbadmin/#server:CyberArk-PSM/PSM2")
    wait_for("PSM2 drained", lambda: box.server("CyberArk-PSM", "PSM2")["state"] == "drain")
    page.keyboard.press("Tab")  # the keyboard goes on from the row it acted in
    assert focused_row(page) == psm2, focused(page)

    # Online asks nothing; halting it again asks, and Cancel keeps it online.
    tab_to(page, "Online", psm2)
    page.keyboard.press("Enter")
    wait_for("PSM2 online", lambda: box.server("CyberArk-PSM", "PSM2")["state"] == "online")
    tab_to(page, "Halt", psm2, back=True)
    page.keyboard.press("Enter")
    page.wait_for_url("**/lbadmin/overview/confirm?*")
    playwright.expect(page.get_by_role("link", name="Cancel")).to_be_focused()
    page.keyboard.press("Enter")
    page.wait_for_url("**/lbadmin/#server:CyberArk-PSM/PSM2")
    playwright.expect(row(page, "CyberArk-PSM", "PSM2")).to_have_class("rip state-online")
    assert box.server("CyberArk-PSM", "PSM2")["state"] == "online"
    lab_set(guide, "PSM1", "pass")


@needs_chromium
def test_states_in_words_and_the_table_fits_800_px(browser: Any, guide: Guide) -> None:
    box = guide.box
    page = open_page(browser, 1280, 800)
    sign_in(page, box)
    lab_set(guide, "PSM2", "fail")
    failed = row(page, "CyberArk-PSM", "PSM2")
    playwright.expect(failed.locator(".state")).to_contain_text("failed")
    playwright.expect(failed.locator(".state")).to_contain_text("expected PASS, got FAIL")
    healthy = row(page, "CyberArk-PSM", "PSM1")
    playwright.expect(healthy.locator(".state")).to_have_text("online")
    vip = page.locator('tr.vip[data-service="CyberArk-PSM"] .state')
    playwright.expect(vip).to_have_text("degraded")
    # The README's docs/images/system-overview.png: PSM2 failing its health check.
    shoot(page, "system-overview")

    web = "/virtual-services/CyberArk-PSM-Web/real-servers"
    box.client.post(f"{web}/PSM1/state", {"state": "drain"})
    box.client.post(f"{web}/PSM2/state", {"state": "halt"})
    playwright.expect(row(page, "CyberArk-PSM-Web", "PSM1").locator(".state")).to_have_text("drain")
    playwright.expect(row(page, "CyberArk-PSM-Web", "PSM2").locator(".state")).to_have_text("halt")
    web_vip = page.locator('tr.vip[data-service="CyberArk-PSM-Web"] .state')
    playwright.expect(web_vip).to_have_text("failed")
    # Each word has a shape of its own, not only a colour: its outline, filled or hollow.
    shapes = page.evaluate(
        """[...document.querySelectorAll('tr[class*=state-] .mark')].map(m => {
             const s = getComputedStyle(m);
             const hollow = s.backgroundColor === 'rgba(0, 0, 0, 0)';
             return [m.closest('tr').className.match(/state-(\\w+)/)[1],
                     [s.borderRadius, s.clipPath, s.borderTopStyle, hollow].join(' ')];
           })"""
    )
    by_word = dict(shapes)
    assert set(by_word) == {"online", "failed", "drain", "halt", "degraded"}
    assert len(set(by_word.values())) == 5, by_word

    # Each real server's state sits under STATE and its buttons under ACTIONS.
    def columns(cell: Any, heading: Any) -> None:
        inside, over = cell.bounding_box(), heading.bounding_box()
        assert over["x"] - 1 <= inside["x"], (inside, over)
        assert inside["x"] + inside["width"] <= over["x"] + over["width"] + 1, (inside, over)

    heads = page.locator('tbody:has(tr[data-service="CyberArk-PSM"]) tr.rip-head th')
    columns(failed.locator(".word"), page.locator("thead th", has_text="STATE"))
    columns(failed.get_by_role("button", name="Drain"), heads.filter(has_text="ACTIONS"))
    columns(failed.get_by_role("button", name="Online"), heads.filter(has_text="ACTIONS"))

    page.set_viewport_size({"width": 800, "height": 1000})
    playwright.expect(page.locator("nav.menu")).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 800
    scroller = page.locator(".table-scroll")
    assert scroller.evaluate("e => e.scrollWidth <= e.clientWidth"), "the table is cut off"
    for button in page.locator("table.overview button").all():
        box_ = button.bounding_box()
        assert box_["x"] + box_["width"] <= 800
    shoot(page, "system-overview-800")


@needs_chromium
def test_a_hung_appliance_shows_the_banner_and_it_goes(browser: Any, guide: Guide) -> None:
    box = guide.box
    overview = open_page(browser, 1280, 800)
    sign_in(overview, box)
    playwright.expect(row(overview, "CyberArk-PSM", "PSM1")).to_have_class("rip state-online")
    # A page that does not refresh itself notices through its heartbeat (every 5 s).
    other = overview.context.new_page()
    other.goto(box.webui + "view-configuration")
    banners = [page.locator("#unreachable") for page in (overview, other)]
    for banner in banners:
        playwright.expect(banner).to_be_hidden()
    # The management process this test started (`balancer serve`), paused: it holds its
    # connections open and answers nothing, as a hung appliance does.
    os.kill(box.process.pid, signal.SIGSTOP)
    try:
        stopped = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
        # The overview's next refresh is due within 2 s; the heartbeat within 5 s.
        for banner, every in zip(banners, (POLL_EVERY, 5.0), strict=True):
            within = (every + POLL_TIME_LIMIT + 5.0) * 1000
            playwright.expect(banner).to_be_visible(timeout=within)
        text = banners[0].inner_text()
        assert "cannot be reached" in text
        since = re.search(r"updated since (\d{4}-\d\d-\d\d \d\d:\d\d):\d\d UTC", text)
        assert since, text
        assert since[1] <= stopped
        shoot(overview, "unreachable-hung")
    finally:
        os.kill(box.process.pid, signal.SIGCONT)
    for banner, every in zip(banners, (POLL_EVERY, 5.0), strict=True):
        playwright.expect(banner).to_be_hidden(timeout=(every + POLL_TIME_LIMIT + 5.0) * 1000)


@needs_chromium
def test_the_first_run_offers_the_setup_wizard(tmp_path: Path) -> None:
    offer = "Would you like to run the Setup Wizard?"
    with appliance(tmp_path) as box, chromium() as browser:
        page = open_page(browser, 1280, 800)
        sign_in(page, box)
        heading = page.get_by_role("heading", name=offer)
        playwright.expect(heading).to_be_visible()
        tab_to(page, "Accept")
        page.keyboard.press("Enter")
        page.wait_for_url("**/lbadmin/wizards/layer-7")
        playwright.expect(page.get_by_role("heading", level=1)).to_be_visible()
        page.go_back()
        playwright.expect(heading).to_be_visible()  # not dismissed by going to look

        tab_to(page, "Dismiss")
        page.keyboard.press("Enter")
        playwright.expect(page.get_by_text("No Virtual Services configured.")).to_be_visible()
        playwright.expect(heading).to_have_count(0)
        page.reload()
        playwright.expect(page.get_by_role("heading", name="System Overview")).to_be_visible()
        playwright.expect(heading).to_have_count(0)
        page.get_by_role("button", name="Sign out").click()
        page.wait_for_url("**/lbadmin/sign-in")
        sign_in(page, box)
        playwright.expect(heading).to_have_count(0)
        dismissed = box.client.get("/audit", limit=5)
        assert ("loadbalancer", "node_settings") in {(e["author"], e["action"]) for e in dismissed}
