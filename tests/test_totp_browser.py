"""Two-factor sign-in in Debian's chromium, by keyboard, on an application served in process on
the test's clock (the appliance judges codes by it): enrolment on the account page, the QR code
drawn (inline SVG under the WebUI's content security policy) beside the key as text, the
recovery codes shown once; then signing in again with the app's code, a replayed code refused,
and a recovery code in its place."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyotp
import pytest

from balancer import totp
from tests.browser import chromium, needs_chromium, open_page, playwright, shoot
from tests.test_webui_accessibility import AXE, RUN_AXE, SERIOUS
from tests.test_webui_keyboard import enter, tab_to
from tests.webapp import PASSWORD, Served, served

pytestmark = needs_chromium
expect = playwright.expect


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with served(tmp_path_factory.mktemp("totp")) as made:
        made.clock.now = 1_800_000_000.0
        yield made


def sign_in_with_password(page: Any, app: Served, then: str = "**/lbadmin/sign-in") -> None:
    page.goto(app.url)
    page.wait_for_url("**/lbadmin/sign-in")
    tab_to(page, "Username")
    page.keyboard.type("loadbalancer")
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    enter(page, then)


def type_code(page: Any, typed: str, url: str) -> None:
    tab_to(page, "Code")
    page.keyboard.press("Control+A")
    page.keyboard.type(typed)
    enter(page, url)


def no_serious_violation(page: Any) -> None:
    """axe-core's serious and critical findings on ``page`` (opened with bypass_csp)."""
    if AXE.exists():
        page.add_script_tag(path=str(AXE))
        assert page.evaluate(RUN_AXE, list(SERIOUS)) == [], page.url


def test_enrol_and_sign_in_by_keyboard(app: Served) -> None:
    with chromium() as browser:
        # The enrolment page as axe-core sees it (in a context of its own: it injects a script).
        page = open_page(browser, 1024, 900, bypass_csp=True)
        sign_in_with_password(page, app, then="**/lbadmin/")
        page.goto(f"{app.url}account/two-factor")
        no_serious_violation(page)
        page.context.close()
        page = open_page(browser, 1024, 900)
        # Signed in with the password alone, before any second factor.
        sign_in_with_password(page, app, then="**/lbadmin/")
        page.goto(f"{app.url}account/two-factor")
        qr = page.locator("figure.qr svg")
        expect(qr).to_be_visible()
        assert qr.bounding_box()["width"] >= 150  # big enough for a phone's camera
        secret = page.locator("#secret").inner_text().replace(" ", "")
        assert page.locator("input[name=secret]").get_attribute("value") == secret
        shoot(page, "two-factor-enrol")
        # The app's code, typed by keyboard and sent with Enter.
        type_code(page, pyotp.TOTP(secret).at(app.clock.now), "**/account/two-factor")
        codes = page.locator("#recovery-codes code").all_inner_texts()
        assert len(codes) == totp.RECOVERY_CODES
        page.goto(f"{app.url}account/two-factor")  # shown once: not again
        expect(page.get_by_text("of your recovery codes are left")).to_be_visible()
        assert codes[0] not in page.content()
        page.context.close()

        # Signing in again: the password, then the code page.
        page = open_page(browser, 1024, 900)
        sign_in_with_password(page, app)
        expect(page.get_by_role("heading", name="Two-factor sign-in")).to_be_visible()
        shoot(page, "two-factor-sign-in")
        # The enrolment's code again (the same step): a replay, refused and said so.
        type_code(page, pyotp.TOTP(secret).at(app.clock.now), "**/lbadmin/sign-in")
        expect(page.get_by_role("alert")).to_contain_text("used already")
        app.clock.now += totp.STEP
        type_code(page, pyotp.TOTP(secret).at(app.clock.now), "**/lbadmin/")
        expect(page.get_by_role("heading", name="System Overview")).to_be_visible()
        page.context.close()

        # A lost phone: a recovery code in place of the app's, good once.
        page = open_page(browser, 1024, 900)
        sign_in_with_password(page, app)
        type_code(page, codes[0], "**/lbadmin/")
        expect(page.get_by_role("heading", name="System Overview")).to_be_visible()
        page.context.close()
        page = open_page(browser, 1024, 900)
        sign_in_with_password(page, app)
        type_code(page, codes[0], "**/lbadmin/sign-in")
        expect(page.get_by_role("alert")).to_contain_text("wrong")
        page.context.close()

        # The second step and the account page of an enrolled user, as axe-core sees them.
        page = open_page(browser, 1024, 900, bypass_csp=True)
        sign_in_with_password(page, app)
        no_serious_violation(page)
        type_code(page, codes[1], "**/lbadmin/")
        page.goto(f"{app.url}account/two-factor")
        no_serious_violation(page)
        page.context.close()
