"""Who may call the appliance over the network: nobody without a session or an API key; forms
need their CSRF token; sign-ins are throttled and logged; sessions end when idle."""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import BaseModel
from starlette.routing import Mount, Route

from balancer import users
from balancer.defaults import SESSION_IDLE_TIMEOUT, SESSION_MAX_LIFETIME, SIGN_IN_FREE_FAILURES
from balancer.front.gate import JOIN, PEER, SIGN_IN, is_public
from balancer.front.sessions import Sessions
from balancer.front.throttle import Throttle
from tests.webapp import PASSWORD, Clock, WebApp, sign_in_token, webapp

GUIDE_VIP = {"label": "CyberArk-PSM", "ip": "192.168.94.100", "ports": "3389"}


@pytest.fixture
def app(tmp_path: Path) -> Iterator[WebApp]:
    with webapp(tmp_path) as running:
        yield running


def every_route(app: WebApp) -> list[tuple[str, str]]:
    """(method, path) of every route the application has, path parameters filled in."""
    found = []
    for context in iter_route_contexts(app.network.app.routes):  # type: ignore[attr-defined]
        route = context.original_route
        if isinstance(route, APIRoute | Route):
            path = re.sub(r"\{[^}]+\}", "1", context.path or "")
            found += [(method, path) for method in sorted(route.methods or ())]
        elif isinstance(route, Mount):
            found.append(("GET", f"{context.path}/balancer.css"))
    return found


def test_no_route_but_sign_in_answers_without_a_session_or_key(app: WebApp) -> None:
    routes = every_route(app)
    assert len(routes) > 30  # the API's and the WebUI's, not an empty walk
    for method, path in routes:
        reply = app.network.request(method, path, follow_redirects=False)
        if path.startswith(PEER):  # the HA peer's, with its pair certificate alone
            assert reply.status_code == 403, (method, path, reply.status_code)
            continue
        if method == "POST" and path in JOIN:  # pairing's, which checks HTTP Basic itself
            assert reply.status_code == 401, (method, path, reply.status_code)
            continue
        if is_public(method, path):
            assert path == SIGN_IN or path.startswith("/lbadmin/static/"), path
            assert reply.status_code < 400 or path == SIGN_IN, (method, path, reply.status_code)
            continue
        assert reply.status_code in (401, 303), (method, path, reply.status_code)
        if reply.status_code == 303:
            assert reply.headers["location"].startswith(SIGN_IN), (method, path)
        elif method != "HEAD":
            assert reply.json()["detail"][0]["field"] == "authorization"
    assert app.network.get("/no/such/route").status_code == 401
    assert app.store.head().id == 0  # nothing was changed by any of it
    assert app.stopped == []


def test_the_unix_socket_is_trusted_and_names_the_os_user(app: WebApp) -> None:
    reply = app.local.post("/api/v1/virtual-services", json=GUIDE_VIP, headers={
        "X-Balancer-User": "root"})  # fmt: skip
    assert reply.status_code == 201, reply.text
    assert app.store.audit_log(1)[0].author == "root"
    # The header means nothing on the network.
    stranger = app.network.get("/api/v1/config", headers={"X-Balancer-User": "root"})
    assert stranger.status_code == 401


def test_an_api_key_works_and_a_revoked_key_does_not(app: WebApp) -> None:
    made = app.local.post("/api/v1/api-keys", json={"name": "ci", "owner": "loadbalancer"})
    assert made.status_code == 201, made.text
    key = made.json()["key"]
    bearer = {"Authorization": f"Bearer {key}"}
    reply = app.network.post("/api/v1/virtual-services", json=GUIDE_VIP, headers=bearer)
    assert reply.status_code == 201, reply.text  # no CSRF token: a key is not a cookie
    assert app.store.audit_log(1)[0].author == "loadbalancer"  # the key's owner
    listed = app.network.get("/api/v1/api-keys", headers=bearer).json()
    assert listed == [{**{k: v for k, v in made.json().items() if k != "key"}}]
    assert key not in str(listed)

    revoked = app.network.delete(f"/api/v1/api-keys/{made.json()['id']}", headers=bearer)
    assert revoked.status_code == 200
    assert app.network.get("/api/v1/config", headers=bearer).status_code == 401
    wrong = {"Authorization": f"Bearer {key[:-1]}x"}
    assert app.network.get("/api/v1/config", headers=wrong).status_code == 401


def test_signing_in_sets_a_strict_secure_cookie_and_shows_system_overview(app: WebApp) -> None:
    token = sign_in_token(app.network)
    reply = app.network.post(
        SIGN_IN,
        data={"username": "loadbalancer", "password": PASSWORD, "csrf_token": token},
        follow_redirects=False,
    )
    assert reply.status_code == 303
    assert reply.headers["location"] == "/lbadmin/"
    cookie = next(c for c in reply.headers.get_list("set-cookie") if "balancer_session=" in c)
    flags = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "secure", "samesite=strict", "path=/"} <= flags
    assert not any(flag.startswith(("expires", "max-age")) for flag in flags)
    page = app.network.get("/lbadmin/")
    assert page.status_code == 200
    assert "System Overview" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    assert app.store.audit_log(1)[0].action == "sign_in"


def test_a_change_made_with_the_session_cookie_needs_the_csrf_token(app: WebApp) -> None:
    csrf = app.sign_in()
    path = "/api/v1/virtual-services"
    assert app.network.post(path, json=GUIDE_VIP).status_code == 403
    wrong = app.network.post(path, json=GUIDE_VIP, headers={"X-CSRF-Token": "0" * 64})
    assert wrong.status_code == 403
    assert app.store.head().id == 0
    right = app.network.post(path, json=GUIDE_VIP, headers={"X-CSRF-Token": csrf})
    assert right.status_code == 201, right.text
    assert app.store.audit_log(1)[0].author == "loadbalancer"
    # Reading needs no token; a plain form may carry it as a field.
    assert app.network.get("/api/v1/config").status_code == 200
    form = {"service": "CyberArk-PSM", "server": "none", "state": "drain"}
    bare = app.network.post("/lbadmin/overview/state", data=form)
    assert bare.status_code == 403
    tokened = app.network.post("/lbadmin/overview/state", data={**form, "csrf_token": csrf})
    assert tokened.status_code == 422  # past the gate: there is no real server 'none'
    assert "there is no real server" in tokened.text


def test_signing_in_needs_the_sign_in_pages_token(app: WebApp) -> None:
    form = {"username": "loadbalancer", "password": PASSWORD}
    assert app.network.post(SIGN_IN, data=form).status_code == 403
    token = sign_in_token(app.network)
    app.network.cookies.clear()  # a page of another site has the token but not the cookie
    assert app.network.post(SIGN_IN, data={**form, "csrf_token": token}).status_code == 403


def attempt(app: WebApp, password: str) -> tuple[int, str]:
    reply = app.network.post(
        SIGN_IN,
        data={"username": "loadbalancer", "password": password, "csrf_token": sign_in_token(
            app.network)},
        follow_redirects=False,
    )  # fmt: skip
    return reply.status_code, reply.headers.get("retry-after", "")


def test_wrong_passwords_are_slowed_down_and_logged(
    app: WebApp, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "balancer.access")
    for _ in range(SIGN_IN_FREE_FAILURES):
        assert attempt(app, "wrong password") == (401, "")
    assert attempt(app, "wrong password") == (401, "1")  # the 4th: from now on, wait
    # Before its time even the right password is not looked at.
    assert attempt(app, PASSWORD) == (429, "1")
    app.clock.now += 1
    assert attempt(app, "wrong password") == (401, "2")  # the 5th: twice as long
    assert attempt(app, "wrong password") == (429, "2")
    app.clock.now += 2
    assert attempt(app, PASSWORD) == (303, "")
    failed = [r for r in caplog.records if r.getMessage() == "sign-in failed"]
    assert len(failed) == 5
    assert {r.user for r in failed} == {"loadbalancer"}  # type: ignore[attr-defined]
    assert len([r for r in caplog.records if "too many" in r.getMessage()]) == 2
    assert PASSWORD not in caplog.text
    actions = [e.action for e in reversed(app.store.audit_log())]
    assert actions[-6:] == ["sign_in_failed"] * 5 + ["sign_in"]


def test_the_throttle_is_per_user_name_too(app: WebApp) -> None:
    users.add_user(app.store, "alice", "the first user's password", author="test")
    for _ in range(SIGN_IN_FREE_FAILURES + 1):
        attempt(app, "wrong password")
    # Another user from the same address waits too: the address has failed.
    app.network.cookies.clear()
    token = sign_in_token(app.network)
    reply = app.network.post(
        SIGN_IN,
        data={"username": "alice", "password": "the first user's password", "csrf_token": token},
        follow_redirects=False,
    )
    assert reply.status_code == 429


def test_a_session_ends_when_idle_and_live_refreshes_do_not_keep_it(app: WebApp) -> None:
    app.sign_in()
    poll = {"X-Balancer-Poll": "1", "HX-Request": "true"}
    app.clock.now += SESSION_IDLE_TIMEOUT - 1
    assert app.network.get("/lbadmin/overview/live", headers=poll).status_code == 200
    app.clock.now += 1
    ended = app.network.get("/lbadmin/overview/live", headers=poll)
    assert ended.status_code == 401
    assert ended.headers["hx-redirect"] == SIGN_IN  # htmx loads the sign-in page
    page = app.network.get("/lbadmin/", follow_redirects=False)
    assert (page.status_code, page.headers["location"]) == (303, SIGN_IN)


def test_use_keeps_a_session_open(app: WebApp) -> None:
    app.sign_in()
    for _ in range(3):
        app.clock.now += SESSION_IDLE_TIMEOUT - 1
        assert app.network.get("/lbadmin/").status_code == 200


def test_a_session_in_constant_use_still_ends_at_its_maximum_lifetime(app: WebApp) -> None:
    app.sign_in()
    step = SESSION_IDLE_TIMEOUT - 1
    for _ in range(math.ceil(SESSION_MAX_LIFETIME / step)):  # never idle for long
        assert app.network.get("/lbadmin/").status_code == 200
        app.clock.now += step
    page = app.network.get("/lbadmin/", follow_redirects=False)
    assert (page.status_code, page.headers["location"]) == (303, SIGN_IN)
    app.sign_in()  # a new sign-in starts a new lifetime
    assert app.network.get("/lbadmin/").status_code == 200


def test_signing_out_and_a_new_password_end_sessions(app: WebApp, tmp_path: Path) -> None:
    csrf = app.sign_in()
    out = app.network.post("/lbadmin/sign-out", data={"csrf_token": csrf}, follow_redirects=False)
    assert (out.status_code, out.headers["location"]) == (303, SIGN_IN)
    assert app.network.get("/api/v1/config").status_code == 401

    app.sign_in()
    assert app.network.get("/api/v1/config").status_code == 200
    users.set_password(app.store, "loadbalancer", "a new password", author="test")
    assert app.network.get("/api/v1/config").status_code == 401


def test_users_are_managed_through_the_api(app: WebApp) -> None:
    made = app.local.post("/api/v1/users", json={"name": "alice", "password": "her own pw, 1!"})
    assert made.status_code == 201, made.text
    assert [u["name"] for u in app.local.get("/api/v1/users").json()] == ["alice", "loadbalancer"]
    short = app.local.put("/api/v1/users/alice/password", json={"password": "short"})
    assert short.status_code == 422
    assert short.json()["detail"][0]["field"] == "password"
    assert (
        app.local.put(
            "/api/v1/users/alice/password", json={"password": "a longer one now"}
        ).status_code
        == 204
    )
    assert app.local.delete("/api/v1/users/alice").status_code == 204
    last = app.local.delete("/api/v1/users/loadbalancer")
    assert last.status_code == 422
    assert "last user" in last.json()["detail"][0]["reason"]
    assert app.local.delete("/api/v1/users/alice").status_code == 404


# The routes one node calls on the other (pairing's join among them).
BETWEEN_NODES = ("/api/v1/peer/", "/api/v1/ha/join/")


def test_every_api_body_refuses_a_field_it_does_not_know(app: WebApp) -> None:
    """A body the API reads as a model of its own forbids what it does not know (a body read as
    a plain object goes to the configuration's models, which do too). Not the routes between
    the nodes, where a newer peer may send more."""
    checked = []
    for context in iter_route_contexts(app.network.app.routes):  # type: ignore[attr-defined]
        route, path = context.original_route, context.path or ""
        if not isinstance(route, APIRoute) or route.body_field is None:
            continue
        if not path.startswith("/api/v1/") or path.startswith(BETWEEN_NODES):
            continue
        model = route.body_field.field_info.annotation
        if isinstance(model, type) and issubclass(model, BaseModel):
            assert model.model_config.get("extra") == "forbid", f"{path}: {model.__name__}"
            checked.append(path)
    assert {"/api/v1/users", "/api/v1/api-keys", "/api/v1/lockdown"} <= set(checked)


@pytest.mark.parametrize(
    ("method", "path", "body", "said"),
    [
        # A misspelt role would have made an administrator.
        ("post", "/api/v1/users", {"name": "bob", "password": "his own pw, 1!", "rol": "viewer"},
         [{"field": "rol", "reason": "is not a known setting"}]),
        ("post", "/api/v1/api-keys", {"name": "monitoring", "rol": "viewer"},
         [{"field": "rol", "reason": "is not a known setting"}]),
        # A misspelt url would have turned the online check off.
        ("put", "/api/v1/software/online", {"ulr": "https://198.18.0.1/latest.json"},
         [{"field": "url", "reason": "is required"},
          {"field": "ulr", "reason": "is not a known setting"}]),
        ("put", "/api/v1/lockdown", {"management_allow": [], "managment_allow": ["198.18.0.0/15"]},
         [{"field": "managment_allow", "reason": "is not a known setting"}]),
    ],
)  # fmt: skip
def test_a_misspelt_field_is_refused_by_name_and_changes_nothing(
    app: WebApp, method: str, path: str, body: dict[str, object], said: list[dict[str, str]]
) -> None:
    before = [app.local.get(shown).json() for shown in SHOWN]
    refused = getattr(app.local, method)(path, json=body)
    assert refused.status_code == 422
    assert refused.json() == {"detail": said}
    assert [app.local.get(shown).json() for shown in SHOWN] == before


# What the refused changes above would have changed.
SHOWN = ("/api/v1/users", "/api/v1/api-keys", "/api/v1/software", "/api/v1/lockdown")


def test_after_signing_in_the_page_asked_for_is_shown_but_never_another_site(
    app: WebApp,
) -> None:
    asked = app.network.get("/lbadmin/overview/live", follow_redirects=False)
    assert asked.headers["location"] == f"{SIGN_IN}?next=/lbadmin/overview/live"
    for wanted, landed in (
        ("/lbadmin/overview/live", "/lbadmin/overview/live"),
        ("https://evil.example/", "/lbadmin/"),
        ("//evil.example/", "/lbadmin/"),
    ):
        app.network.cookies.clear()
        reply = app.network.post(
            SIGN_IN,
            data={"username": "loadbalancer", "password": PASSWORD, "next": wanted,
                  "csrf_token": sign_in_token(app.network)},
            follow_redirects=False,
        )  # fmt: skip
        assert reply.headers["location"] == landed


def test_the_throttles_wait_doubles_up_to_its_cap_and_is_forgotten() -> None:
    clock = Clock()
    throttle = Throttle(clock, free=3, delay=1.0, delay_max=30.0, forget=900.0)
    waits = [throttle.failed("address 10.0.0.1") for _ in range(12)]
    assert waits == [0, 0, 0, 1, 2, 4, 8, 16, 30, 30, 30, 30]
    assert throttle.wait("address 10.0.0.1", "user x") == 30
    assert throttle.wait("address 10.0.0.2", "user x") == 0
    assert throttle.delay_after(100_000) == 30  # no overflow, however long an attack goes on
    clock.now += 900
    assert throttle.wait("address 10.0.0.1") == 0
    assert throttle.failed("address 10.0.0.1") == 0  # forgotten: it starts again


def test_sessions_are_kept_by_digest_and_bounded() -> None:
    clock = Clock()
    sessions = Sessions(idle_timeout=60, max_lifetime=3600, clock=clock)
    token = sessions.open("alice", "hash")
    assert token not in repr(vars(sessions))
    assert sessions.find(token, touch=False) is not None
    assert sessions.csrf_ok(token, sessions.csrf_token(token))
    assert not sessions.csrf_ok(token, sessions.csrf_token(token + "x"))
    assert Sessions(60, 3600, clock).csrf_token(token) != sessions.csrf_token(token)  # per daemon
    clock.now += 60
    assert sessions.find(token, touch=True) is None
