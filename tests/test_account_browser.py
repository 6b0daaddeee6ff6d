"""An operator changes their own password in Debian's chromium, by keyboard, on an application
served in process: the header's Password link, a wrong current password and a weak new one
refused with their reasons, then the change, which ends the operator's session in another
browser and keeps this one. And the page with a refusal on it, as axe-core sees it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from balancer import users
from balancer.roles import Role
from tests.browser import chromium, needs_chromium, open_page, playwright, shoot
from tests.test_totp_browser import no_serious_violation
from tests.test_webui_keyboard import enter, follow, tab_to
from tests.webapp import PASSWORD, Served, served

pytestmark = needs_chromium
expect = playwright.expect
NEW = "a fresh one for the night shift"


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with served(tmp_path_factory.mktemp("account")) as made:
        users.add_user(made.store, "operator", PASSWORD, Role.OPERATOR, author="test")
        yield made


def sign_in(page: Any, app: Served, password: str = PASSWORD, user: str = "operator") -> None:
    page.goto(app.url)
    page.wait_for_url("**/lbadmin/sign-in")
    tab_to(page, "Username")
    page.keyboard.type(user)
    page.keyboard.press("Tab")
    page.keyboard.type(password)
    enter(page, "**/lbadmin/")


def change(page: Any, current: str, new: str) -> None:
    """The form typed by keyboard, from its first field, and sent with Enter."""
    for field, typed in (
        ("Current password", current),
        ("New password", new),
        ("New password again", new),
    ):
        tab_to(page, field)
        page.keyboard.press("Control+A")
        page.keyboard.type(typed)
    enter(page, "**/lbadmin/account/password**")


def test_an_operator_changes_their_own_password_by_keyboard(app: Served) -> None:
    with chromium() as browser:
        elsewhere = open_page(browser, 1024, 800)
        sign_in(elsewhere, app)
        page = open_page(browser, 1024, 800)
        sign_in(page, app)
        page.locator("body").focus()
        follow(page, "Password", "**/lbadmin/account/password")
        expect(page.get_by_role("heading", name="Your password")).to_be_visible()

        change(page, "not my password", NEW)
        expect(page.get_by_role("alert")).to_contain_text("current: is not your current password")
        change(page, PASSWORD, "Operator-night-7")
        expect(page.get_by_role("alert")).to_contain_text(
            "password: contains the user's name, operator"
        )
        shoot(page, "account-password-refused")
        assert users.verify(app.store, "operator", PASSWORD) is not None

        change(page, PASSWORD, NEW)
        expect(page.get_by_role("status")).to_contain_text(
            "The password of operator was changed; your other sessions have ended."
        )
        page.goto(app.url)
        expect(page.get_by_role("heading", name="System Overview")).to_be_visible()
        # The other browser's session has ended: its next page is the sign-in form.
        elsewhere.goto(app.url)
        elsewhere.wait_for_url("**/lbadmin/sign-in**")
        sign_in(elsewhere, app, NEW)
        expect(elsewhere.get_by_role("heading", name="System Overview")).to_be_visible()


def test_axe_core_finds_nothing_serious_on_the_page(app: Served) -> None:
    with chromium() as browser:
        page = open_page(browser, 1024, 800, bypass_csp=True)  # axe-core is a script of its own
        sign_in(page, app, user="loadbalancer")  # whose password no other test changes
        page.goto(f"{app.url}account/password")
        change(page, "not my password", NEW)
        expect(page.get_by_role("alert")).to_contain_text("current: is not your current password")
        no_serious_violation(page)
