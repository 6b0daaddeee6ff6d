"""Directory sign-in through the API, the command line's requests and the WebUI's forms, against
a real slapd and freeradius: who signs in with which role, what the test says, the secret never
shown, and local users signing in whatever the directory does."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from balancer.defaults import SIGN_IN_FREE_FAILURES
from tests.appliance import free_port
from tests.directory_servers import (
    BASE_DN,
    RADIUS_SECRET,
    READER_DN,
    READER_PASSWORD,
    USERS,
    Radius,
    Slapd,
    authority,
    freeradius,
    slapd,
)
from tests.webapp import PASSWORD, WebApp, csrf_of, sign_in_token, webapp

SIGN_IN = "/lbadmin/sign-in"
PAGE = "/lbadmin/local-configuration/remote-authentication"


@pytest.fixture(scope="module")
def ldap_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    with slapd(tmp_path_factory.mktemp("directory") / "slapd") as server:
        yield server


@pytest.fixture(scope="module")
def radius_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Radius]:
    with freeradius(tmp_path_factory.mktemp("directory") / "radius") as server:
        yield server


@pytest.fixture
def app(tmp_path: Path) -> Iterator[WebApp]:
    with webapp(tmp_path) as found:
        yield found


def ldaps(server: Slapd, **changes: Any) -> dict[str, Any]:
    return {
        "kind": "ldaps",
        "servers": [f"127.0.0.1:{server.ldaps_port}"],
        "base_dn": BASE_DN,
        "bind_dn": READER_DN,
        "domain": "example.test",
        "ca_certificate": server.ca.pem,
        "roles": [
            {"group": f"cn=balancer-admins,ou=groups,{BASE_DN}", "role": "administrator"},
            {"group": "balancer-operators", "role": "operator"},
        ],
        "timeout": 3,
        "secret": READER_PASSWORD,
        **changes,
    }


def sign_in(app: WebApp, name: str, password: str) -> tuple[int, str]:
    """Sign in through the form on a client of its own: the answer's status and page."""
    with TestClient(app.network.app, base_url="https://balancer.test") as browser:
        reply = browser.post(
            SIGN_IN,
            data={"username": name, "password": password, "csrf_token": sign_in_token(browser)},
            follow_redirects=False,
        )
        if reply.status_code != 303:
            return reply.status_code, reply.text
        return reply.status_code, browser.get("/lbadmin/").text


def test_settings_never_show_the_secret(
    app: WebApp, ldap_server: Slapd, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    api = app.local
    assert api.get("/api/v1/directory").json() == {"enabled": False}
    saved = api.put("/api/v1/directory", json=ldaps(ldap_server))
    assert saved.status_code == 200, saved.text
    assert saved.json()["secret"] == "set"
    assert saved.json()["enabled"] is True
    # Left out, the secret is kept.
    again = api.put("/api/v1/directory", json={**ldaps(ldap_server), "secret": None, "timeout": 4})
    assert again.json()["timeout"] == 4
    assert app.store.directory() is not None
    assert app.store.directory()[1] == READER_PASSWORD  # type: ignore[index]
    bad = api.put("/api/v1/directory", json=ldaps(ldap_server, kind="ldapz", base_dn="nonsense"))
    assert bad.status_code == 422
    assert {problem["field"] for problem in bad.json()["detail"]} >= {"kind"}
    said = api.post("/api/v1/directory/test", json={"name": "alice", "password": USERS["alice"][0]})
    assert said.json() == {
        "ok": True,
        "reason": None,
        "said": f"alice signs in as administrator (groups: cn=balancer-admins,ou=groups,{BASE_DN})",
    }
    audit = [(e.action, e.detail) for e in app.store.audit_log(20)]
    everything = repr(audit) + caplog.text + api.get("/api/v1/directory").text
    assert READER_PASSWORD not in everything
    assert USERS["alice"][0] not in everything
    assert api.delete("/api/v1/directory").status_code == 204
    assert api.get("/api/v1/directory").json() == {"enabled": False}


def test_the_test_names_what_failed(app: WebApp, ldap_server: Slapd) -> None:
    api = app.local
    assert api.post("/api/v1/directory/test", json={}).status_code == 409
    stranger = authority("Not the directory's CA")
    api.put("/api/v1/directory", json=ldaps(ldap_server, ca_certificate=stranger.pem))
    said = api.post("/api/v1/directory/test", json={"name": "alice", "password": "x"}).json()
    assert (said["ok"], said["reason"]) == (False, "certificate")
    assert "certificate is not trusted" in said["said"]
    api.put("/api/v1/directory", json=ldaps(ldap_server, secret="not the reader's"))
    said = api.post("/api/v1/directory/test", json={}).json()
    assert (said["ok"], said["reason"]) == (False, "bind")
    api.put("/api/v1/directory", json=ldaps(ldap_server))
    said = api.post("/api/v1/directory/test", json={}).json()
    assert said == {
        "ok": True,
        "reason": None,
        "said": f"127.0.0.1:{ldap_server.ldaps_port} answered and took {READER_DN}",
    }


def test_directory_users_sign_in_with_their_groups_role(app: WebApp, ldap_server: Slapd) -> None:
    app.local.put("/api/v1/directory", json=ldaps(ldap_server))
    status, page = sign_in(app, "EXAMPLE\\alice", USERS["alice"][0])
    assert status == 303
    assert "alice" in page
    assert app.store.audit_log(1)[0].author == "alice"
    assert app.store.audit_log(1)[0].detail["directory"] == "administrator"
    # bob is an operator through helpdesk, a member of balancer-operators (nested).
    with TestClient(app.network.app, base_url="https://balancer.test") as browser:
        reply = browser.post(
            SIGN_IN,
            data={
                "username": "bob@example.test",
                "password": USERS["bob"][0],
                "csrf_token": sign_in_token(browser),
            },
            follow_redirects=False,
        )
        assert reply.status_code == 303
        # An operator may not open Local Configuration.
        assert browser.get("/api/v1/directory").status_code == 403
        assert browser.get("/lbadmin/").status_code == 200
    # Wrong password, in no mapped group, unknown: refused alike, the reason in the audit.
    for name, password, reason in (
        ("alice", "not alice's password", "password"),
        ("carol", USERS["carol"][0], "group"),
        ("mallory", "anything", "not_found"),
    ):
        status, page = sign_in(app, name, password)
        assert status == 401, page
        assert "Wrong user name or password." in page
        entry = app.store.audit_log(1)[0]
        assert (entry.action, entry.author, entry.detail["directory"]) == (
            "sign_in_failed",
            name,
            reason,
        )
    # Throttled as a local user's name is: refused before the directory is asked.
    statuses = [sign_in(app, "mallory", "anything")[0] for _ in range(SIGN_IN_FREE_FAILURES)]
    assert statuses[-1] == 429


def test_a_role_that_must_have_a_second_factor_is_not_let_in_on_an_ldap_password(
    app: WebApp, ldap_server: Slapd, radius_server: Radius
) -> None:
    app.local.put("/api/v1/directory", json=ldaps(ldap_server))
    assert app.local.put("/api/v1/two-factor", json={"required": ["administrator"]}).is_success
    status, page = sign_in(app, "alice", USERS["alice"][0])
    assert status == 401
    assert "the administrator role must sign in with a second factor" in page
    assert "sign in with a local account" in page
    entry = app.store.audit_log(1)[0]
    assert (entry.action, entry.detail["directory"]) == ("sign_in_failed", "two_factor")
    # Said only once the password was right; other roles as before.
    status, page = sign_in(app, "alice", "not alice's password")
    assert (status, "Wrong user name or password." in page) == (401, True)
    assert sign_in(app, "bob", USERS["bob"][0])[0] == 303
    # RADIUS is trusted with the second factor (one-time passwords live there).
    body = {
        "kind": "radius",
        "servers": [f"127.0.0.1:{radius_server.port}"],
        "roles": [{"group": "balancer-admins", "role": "administrator"}],
        "secret": RADIUS_SECRET,
        "timeout": 2,
    }
    assert app.local.put("/api/v1/directory", json=body).status_code == 200
    assert sign_in(app, "alice", USERS["alice"][0])[0] == 303
    assert app.store.audit_log(1)[0].detail["directory"] == "administrator"


def test_a_local_user_always_wins_and_signs_in_with_the_directory_down(
    app: WebApp, ldap_server: Slapd
) -> None:
    down = f"127.0.0.1:{free_port(['127.0.0.1'])}"
    app.local.put("/api/v1/directory", json=ldaps(ldap_server, servers=[down]))
    status, _ = sign_in(app, "loadbalancer", PASSWORD)
    assert status == 303
    status, _ = sign_in(app, "alice", USERS["alice"][0])
    assert status == 401
    assert app.store.audit_log(1)[0].detail["directory"] == "unreachable"
    # A local user's wrong password is not asked of the directory; nor is a directory account
    # that bears a local user's name let in.
    app.local.put("/api/v1/directory", json=ldaps(ldap_server))
    status, _ = sign_in(app, "loadbalancer", "not the password")
    assert status == 401
    assert "directory" not in app.store.audit_log(1)[0].detail
    app.local.post("/api/v1/users", json={"name": "alice", "password": "a local password 1"})
    status, _ = sign_in(app, "EXAMPLE\\alice", USERS["alice"][0])
    assert status == 401
    assert app.store.audit_log(1)[0].detail["directory"] == "local"


def test_radius_users_sign_in(app: WebApp, radius_server: Radius) -> None:
    body = {
        "kind": "radius",
        "servers": [f"127.0.0.1:{radius_server.port}"],
        "roles": [{"group": "balancer-admins", "role": "administrator"}],
        "default_role": "viewer",
        "secret": RADIUS_SECRET,
        "timeout": 2,
    }
    assert app.local.put("/api/v1/directory", json=body).status_code == 200
    assert sign_in(app, "alice", USERS["alice"][0])[0] == 303
    assert app.store.audit_log(1)[0].detail["directory"] == "administrator"
    assert sign_in(app, "carol", USERS["carol"][0])[0] == 303
    assert app.store.audit_log(1)[0].detail["directory"] == "viewer"
    assert sign_in(app, "carol", "wrong")[0] == 401


def test_the_webui_page_saves_and_tests(app: WebApp, ldap_server: Slapd) -> None:
    csrf = app.sign_in()
    web = app.network
    page = web.get(PAGE)
    assert page.status_code == 200
    assert "Off: only local users sign in." in page.text
    form = {
        "csrf_token": csrf,
        "kind": "ldaps",
        "servers": f"127.0.0.1:{ldap_server.ldaps_port}",
        "secret": READER_PASSWORD,
        "timeout": "3",
        "base_dn": BASE_DN,
        "bind_dn": READER_DN,
        "domain": "example.test",
        "user_filter": "(|(sAMAccountName={user})(userPrincipalName={upn}))",
        "nested_groups": "walk",
        "member_attribute": "member",
        "ca_certificate": ldap_server.ca.pem,
        "role_attribute": "Filter-Id",
        "roles": "balancer-admins = administrator\nbalancer-operators = operator",
        "default_role": "",
    }
    refused = web.post(PAGE, data={**form, "roles": "balancer-admins"})
    assert refused.status_code == 422
    assert "write GROUP = ROLE" in refused.text
    assert READER_PASSWORD not in refused.text
    saved = web.post(PAGE, data=form, follow_redirects=True)
    assert "Remote authentication saved" in saved.text
    assert READER_PASSWORD not in saved.text
    assert "Set; leave empty to keep it." in saved.text
    tested = web.post(
        f"{PAGE}/test",
        data={"csrf_token": csrf, "test_name": "EXAMPLE\\bob", "test_password": USERS["bob"][0]},
    )
    assert "bob signs in as operator" in tested.text
    tested = web.post(
        f"{PAGE}/test",
        data={"csrf_token": csrf, "test_name": "carol", "test_password": USERS["carol"][0]},
    )
    assert "group: " in tested.text
    assert "in no group mapped to a role" in tested.text
    # Saved again without a secret: the one saved is kept.
    web.post(PAGE, data={**form, "secret": ""})
    assert app.store.directory()[1] == READER_PASSWORD  # type: ignore[index]
    off = web.post(f"{PAGE}/off", data={"csrf_token": csrf}, follow_redirects=True)
    assert "Remote authentication is off" in off.text
    assert csrf_of(off.text)
