"""Each user's own password, whatever their role, in process (tests/webapp.py): the page linked
from every page's header, and PUT /api/v1/account/password for a session or a key. The current
password is asked (guesses throttled as sign-ins are), a weak new one is refused with its
reason, the change ends the user's other sessions and keeps the one that made it, and it is
audited. A directory user is told the password is changed in the directory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from balancer import defaults, users
from balancer.front.access import SESSION_COOKIE
from balancer.front.gate import Gate
from balancer.roles import Role
from tests.webapp import PASSWORD, WebApp, csrf_of, webapp

ACCOUNT = "/lbadmin/account/password"
API = "/api/v1/account/password"
NEW = "a fresh one for the night shift"


@pytest.fixture
def app(tmp_path: Path) -> Iterator[WebApp]:
    with webapp(tmp_path) as running:
        users.add_user(running.store, "operator", PASSWORD, Role.OPERATOR, author="test")
        users.add_user(running.store, "viewer", PASSWORD, Role.VIEWER, author="test")
        yield running


def browser(app: WebApp) -> TestClient:
    return TestClient(app.network.app, base_url="https://balancer.test")


def change(client: TestClient, csrf: str, current: str, new: str, repeat: str | None = None) -> str:
    form = {"csrf_token": csrf, "current": current, "password": new, "repeat": repeat or new}
    reply = client.post(ACCOUNT, data=form)
    return f"{reply.status_code} {reply.text}"


def test_an_operator_changes_their_own_password_and_their_other_session_ends(
    app: WebApp,
) -> None:
    csrf = app.sign_in(user="operator")
    other = browser(app)
    app.sign_in(other, "operator")
    page = app.network.get("/lbadmin/").text
    assert f'href="{ACCOUNT}"' in page  # the header's link, beside Two-factor sign-in
    assert app.network.get("/lbadmin/maintenance/passwords").status_code == 403

    said = change(app.network, csrf, "a guess", NEW)
    assert said.startswith("422 ")
    assert "<code>current</code>: is not your current password" in said
    said = change(app.network, csrf, PASSWORD, "Operator-on-call-7")
    assert "<code>password</code>: contains the user&#39;s name, operator" in said
    said = change(app.network, csrf, PASSWORD, "short one")
    assert "<code>password</code>: must be at least 12 characters long" in said
    said = change(app.network, csrf, PASSWORD, NEW, NEW + "!")
    assert "<code>repeat</code>: is not the same as the new password" in said
    assert users.verify(app.store, "operator", PASSWORD) is not None  # nothing changed
    refused = app.store.audit_log(action="password_refused")
    assert [(e.author, e.target) for e in refused] == [("operator", "operator")]

    said = change(app.network, csrf, PASSWORD, NEW)
    assert said.startswith("200 ")
    assert "The password of operator was changed; your other sessions have ended." in said
    assert app.store.audit_log(1)[0].action == "password"
    assert (app.store.audit_log(1)[0].author, app.store.audit_log(1)[0].target) == (
        "operator",
        "operator",
    )
    assert app.network.get("/lbadmin/").status_code == 200  # this session goes on
    gone = other.get("/lbadmin/", follow_redirects=False)
    assert gone.headers["location"].startswith("/lbadmin/sign-in")
    app.sign_in(browser(app), "operator", NEW)


def test_a_viewer_changes_theirs_through_the_api_with_a_session_or_a_key(app: WebApp) -> None:
    csrf = app.sign_in(user="viewer")
    headers = {"X-CSRF-Token": csrf}
    wrong = app.network.put(API, json={"current": "a guess", "password": NEW}, headers=headers)
    assert wrong.status_code == 422
    assert wrong.json()["detail"] == [
        {"field": "current", "reason": "is not your current password"}
    ]
    weak = app.network.put(
        API, json={"current": PASSWORD, "password": "Password-2026"}, headers=headers
    )
    assert weak.json()["detail"] == [
        {
            "field": "password",
            "reason": "is a common password (password, with digits or signs around it)",
        }
    ]
    done = app.network.put(API, json={"current": PASSWORD, "password": NEW}, headers=headers)
    assert done.status_code == 204, done.text
    assert app.network.get("/api/v1/status").status_code == 200

    _, key = users.add_api_key(app.store, "ci", "viewer", author="viewer")
    with browser(app) as api:
        bearer = {"Authorization": f"Bearer {key}"}
        body = {"current": NEW, "password": "yet another one for the key"}
        assert api.put(API, json=body, headers=bearer).status_code == 204
        assert api.get("/api/v1/status", headers=bearer).status_code == 200
    # The session's user changed it elsewhere: the session has ended.
    assert app.network.get("/api/v1/status").status_code == 401
    # Still a viewer: nobody else's password through this route, and not the users' routes.
    assert app.sign_in(user="viewer", password="yet another one for the key")
    other = app.network.put("/api/v1/users/operator/password", json={"password": NEW})
    assert other.status_code == 403


def test_guessing_the_current_password_is_throttled_as_signing_in_is(app: WebApp) -> None:
    csrf = app.sign_in(user="operator")
    for _ in range(defaults.SIGN_IN_FREE_FAILURES + 1):
        assert "is not your current password" in change(app.network, csrf, "a guess", NEW)
    said = change(app.network, csrf, PASSWORD, NEW)  # right, but before its time
    assert "<code>current</code>: too many wrong passwords: try again in 1 s" in said
    assert users.verify(app.store, "operator", PASSWORD) is not None
    app.clock.now += defaults.SIGN_IN_DELAY
    assert change(app.network, csrf, PASSWORD, NEW).startswith("200 ")


def test_a_directory_user_is_sent_to_the_directory(app: WebApp) -> None:
    # A directory user's session as Access.sign_in opens it: no password hash, a mapped role.
    (access,) = (m.kwargs["access"] for m in app.network.app.user_middleware if m.cls is Gate)
    cookie = access.sessions.open("dora", None, Role.OPERATOR)
    with browser(app) as directory_user:
        directory_user.cookies.set(SESSION_COOKIE, cookie)
        page = directory_user.get(ACCOUNT)
        assert page.status_code == 200
        assert "dora signs in with the directory" in page.text
        assert 'name="current"' not in page.text
        refused = directory_user.put(
            API,
            json={"current": "x", "password": NEW},
            headers={"X-CSRF-Token": csrf_of(page.text)},
        )
        assert refused.status_code == 422
        (problem,) = refused.json()["detail"]
        assert problem == {
            "field": "user",
            "reason": "dora signs in with the directory: the password is changed there, not here",
        }
    # Root on the Unix socket is no user of the WebUI: `balancer user passwd` is theirs.
    body = {"current": "x", "password": NEW}
    local = app.local.put(API, json=body, headers={"X-Balancer-User": "root"})
    assert local.json()["detail"] == [
        {
            "field": "user",
            "reason": "root is no user of the WebUI and the API: see balancer user passwd",
        }
    ]
