"""Maintenance and Local Configuration in the WebUI.

In process (tests/webapp.py): Passwords (users, passwords, API keys, each audited with the
signed-in user's name), the CSRF token of a file upload, Restart Services' confirmation, and
service socket addresses. In Debian's chromium against the whole appliance with the guide's
setup: download a backup, change a weight, restore the backup through the page, and see the
change gone; screenshots of each page at 1280 and 768 px.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from balancer.model import NodeSettings
from tests.appliance import Guide, free_port
from tests.browser import needs_chromium, open_page, playwright, shoot, sign_in
from tests.webapp import PASSWORD, WebApp, webapp

PASSWORDS = "/lbadmin/maintenance/passwords"
RESTORE = "/lbadmin/maintenance/backup/restore"
SOCKETS = "/lbadmin/local-configuration/sockets"
SESSIONS = "/lbadmin/local-configuration/sessions"


@pytest.fixture
def app(tmp_path: Path) -> Iterator[WebApp]:
    with webapp(tmp_path) as running:
        yield running


def another(app: WebApp) -> TestClient:
    """A second browser, or an API client, on the same appliance."""
    return TestClient(app.network.app, base_url="https://balancer.test")


def audited(app: WebApp) -> tuple[str, str, str]:
    entry = app.store.audit_log(1)[0]
    return entry.author, entry.action, entry.target


def test_add_a_user_change_their_password_and_remove_them(app: WebApp) -> None:
    csrf = app.sign_in()
    new = {"csrf_token": csrf, "name": "operator", "password": "a good password"}
    reply = app.network.post(f"{PASSWORDS}/users", data={**new, "repeat": "another one"})
    assert reply.status_code == 422
    assert "<code>repeat</code>: is not the same" in reply.text
    assert [u.name for u in app.store.users()] == ["loadbalancer"]

    reply = app.network.post(f"{PASSWORDS}/users", data={**new, "repeat": new["password"]})
    assert reply.status_code == 200
    assert "User operator added." in reply.text
    assert audited(app) == ("loadbalancer", "add_user", "operator")

    changed = {"csrf_token": csrf, "name": "operator", "password": "x", "repeat": "x"}
    reply = app.network.post(f"{PASSWORDS}/password", data=changed)
    assert reply.status_code == 422
    assert "<code>password</code>: must be at least 12 characters long" in reply.text
    weak = changed | {"password": "operator 2026!", "repeat": "operator 2026!"}
    reply = app.network.post(f"{PASSWORDS}/password", data=weak)
    assert "<code>password</code>: contains the user&#39;s name, operator" in reply.text
    changed |= {"password": "a new password", "repeat": "a new password"}
    assert app.network.post(f"{PASSWORDS}/password", data=changed).status_code == 200
    assert audited(app) == ("loadbalancer", "password", "operator")
    app.sign_in(another(app), "operator", "a new password")  # the new password is the one

    reply = app.network.post(f"{PASSWORDS}/remove", data={"csrf_token": csrf, "name": "operator"})
    assert "User operator removed" in reply.text
    assert audited(app) == ("loadbalancer", "remove_user", "operator")
    assert [u.name for u in app.store.users()] == ["loadbalancer"]


def test_your_own_password_needs_the_current_one_and_ends_your_other_sessions(app: WebApp) -> None:
    csrf = app.sign_in()
    form = {"csrf_token": csrf, "name": "loadbalancer", "password": "my new password"}
    form["repeat"] = form["password"]
    reply = app.network.post(f"{PASSWORDS}/password", data={**form, "current": "a guess"})
    assert reply.status_code == 422
    assert "<code>current</code>: is not your current password" in reply.text
    assert app.network.get(PASSWORDS).status_code == 200  # still signed in, nothing changed

    other = another(app)
    app.sign_in(other)
    reply = app.network.post(f"{PASSWORDS}/password", data={**form, "current": PASSWORD})
    assert "The password of loadbalancer was changed" in reply.text
    assert audited(app) == ("loadbalancer", "password", "loadbalancer")
    # As on the user's own page (tests/test_account.py): this session goes on, the others end.
    assert app.network.get(PASSWORDS, follow_redirects=False).status_code == 200
    assert other.get(PASSWORDS, follow_redirects=False).status_code == 303
    app.sign_in(another(app), password="my new password")


def test_the_last_user_stays_and_removing_yourself_is_confirmed(app: WebApp) -> None:
    csrf = app.sign_in()
    page = app.network.get(PASSWORDS).text
    assert "the last user cannot be removed" in page
    me = {"csrf_token": csrf, "name": "loadbalancer"}
    reply = app.network.post(f"{PASSWORDS}/remove", data={**me, "confirm": "yes"})
    assert reply.status_code == 422
    assert "is the last user: nobody could sign in" in reply.text

    app.local.post("/api/v1/users", json={"name": "second", "password": "the next one's password"})
    reply = app.network.post(f"{PASSWORDS}/remove", data=me)
    assert "Remove yourself, loadbalancer?" in reply.text
    assert "loadbalancer" in [u.name for u in app.store.users()]  # not yet
    reply = app.network.post(
        f"{PASSWORDS}/remove", data={**me, "confirm": "yes"}, follow_redirects=False
    )
    assert reply.headers["location"] == "/lbadmin/sign-in"
    assert [u.name for u in app.store.users()] == ["second"]
    assert audited(app) == ("loadbalancer", "remove_user", "loadbalancer")


def test_an_api_key_is_shown_once_works_and_once_revoked_gets_401(app: WebApp) -> None:
    csrf = app.sign_in()
    reply = app.network.post(
        f"{PASSWORDS}/api-keys", data={"csrf_token": csrf, "name": "monitoring"}
    )
    assert reply.status_code == 200
    key = reply.text.split('<code id="new-key">')[1].split("</code>")[0]
    assert key.startswith("blb_")
    assert audited(app) == ("loadbalancer", "add_api_key", "loadbalancer")
    assert key not in app.network.get(PASSWORDS).text  # shown once
    bearer = {"Authorization": f"Bearer {key}"}
    with another(app) as api:
        assert api.get("/api/v1/status", headers=bearer).status_code == 200
        (made,) = app.store.api_keys()
        reply = app.network.post(
            f"{PASSWORDS}/api-keys/revoke", data={"csrf_token": csrf, "id": str(made.id)}
        )
        assert f"API key {made.id} revoked." in reply.text
        assert audited(app) == ("loadbalancer", "revoke_api_key", "loadbalancer")
        assert api.get("/api/v1/status", headers=bearer).status_code == 401

    reply = app.network.post(f"{PASSWORDS}/api-keys/revoke", data={"csrf_token": csrf, "id": "x"})
    assert "<code>id</code>: &#39;x&#39; is not an API key&#39;s number" in reply.text


BOUNDARY = "b0undary"


def _part(name: str, value: bytes, filename: str = "") -> bytes:
    named = f'name="{name}"' + (f'; filename="{filename}"' if filename else "")
    head = f"--{BOUNDARY}\r\nContent-Disposition: form-data; {named}\r\n\r\n"
    return head.encode() + value + b"\r\n"


@pytest.mark.parametrize("case", ["no token", "wrong token", "token after the file"])
def test_a_file_upload_without_its_token_first_is_refused(app: WebApp, case: str) -> None:
    csrf = app.sign_in().encode()
    file = _part("file", app.local.get("/api/v1/backup").content, "backup.json")
    end = f"--{BOUNDARY}--\r\n".encode()
    body = {
        "no token": file + end,
        "wrong token": _part("csrf_token", b"0" * 64) + file + end,
        "token after the file": file + _part("csrf_token", csrf) + end,
    }[case]
    kind = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    assert app.network.post(RESTORE, content=body, headers=kind).status_code == 403
    assert app.store.head().id == 0
    # The same file, its token first, is let through.
    body = _part("csrf_token", csrf) + file + end
    assert app.network.post(RESTORE, content=body, headers=kind).status_code == 200
    assert app.store.head().id == 1


def test_a_disruptive_restart_is_confirmed_first(app: WebApp) -> None:
    csrf = app.sign_in()
    page = app.network.get("/lbadmin/maintenance/restart").text
    assert "Every open connection through every virtual service is dropped" in page
    assert "no connection through a virtual service is dropped" in page
    engine = {"csrf_token": csrf, "action": "engine"}
    reply = app.network.post("/lbadmin/maintenance/restart", data=engine)
    assert "Restart the engine?" in reply.text
    assert [e.action for e in app.store.audit_log(1)] == ["sign_in"]  # nothing done yet
    reply = app.network.post(
        "/lbadmin/maintenance/restart", data={**engine, "confirm": "yes"}, follow_redirects=False
    )
    assert reply.headers["location"] == "/lbadmin/maintenance/restart?done=engine"
    assert audited(app) == ("loadbalancer", "restart_engine", "fake")

    app.local.post("/api/v1/virtual-services", json={"label": "W", "ip": "10.0.0.1", "ports": "80"})
    app.network.post("/lbadmin/maintenance/restart", data={"csrf_token": csrf, "action": "reload"})
    assert app.engine.revision == app.store.head().id  # reload commits, unconfirmed: it drops none


def test_service_socket_addresses_are_checked_saved_and_audited(app: WebApp) -> None:
    csrf = app.sign_in()
    before = app.store.node_settings()
    for form, problem in [
        ({"https_port": "none"}, "<code>https_port</code>: "),
        ({"https_port": "70000"}, "<code>https_port</code>: "),
        ({"https_port": "9443", "http_port": "9443"}, "is already the https_port"),
        ({"https_port": "9443", "listen_address": "not-an-ip"}, "<code>listen_address</code>"),
        # An address this machine does not have cannot be listened on.
        ({"https_port": "9443", "listen_address": "192.0.2.1"}, "<code>listen_address</code>"),
    ]:
        reply = app.network.post(SOCKETS, data={"csrf_token": csrf, **form})
        assert reply.status_code == 422, form
        assert problem in reply.text, form
        assert app.store.node_settings() == before

    port = free_port(["127.0.0.1"])
    wanted = {"listen_address": "127.0.0.1", "https_port": str(port), "http_port": ""}
    reply = app.network.post(SOCKETS, data={"csrf_token": csrf, **wanted})
    assert "The service socket addresses were saved." in reply.text
    saved = app.store.node_settings()
    assert (str(saved.listen_address), saved.https_port, saved.http_port) == (
        "127.0.0.1",
        port,
        None,
    )
    assert audited(app)[:2] == ("loadbalancer", "node_settings")
    assert NodeSettings.model_fields["http_port"].default is None  # plain HTTP stays off


def test_session_timeouts_are_checked_saved_audited_and_hold_at_once(app: WebApp) -> None:
    csrf = app.sign_in()
    before = app.store.node_settings()
    for form, problem in [
        ({"idle_minutes": "soon", "lifetime_hours": "12"}, "<code>idle_minutes</code>: "),
        ({"idle_minutes": "30", "lifetime_hours": "0"}, "<code>lifetime_hours</code>: "),
        ({"idle_minutes": "-5", "lifetime_hours": "12"}, "<code>idle_minutes</code>: "),
    ]:
        reply = app.network.post(SESSIONS, data={"csrf_token": csrf, **form})
        assert reply.status_code == 422, form
        assert problem in reply.text, form
        assert app.store.node_settings() == before

    reply = app.network.post(
        SESSIONS, data={"csrf_token": csrf, "idle_minutes": "5", "lifetime_hours": "1"}
    )
    assert "The session timeouts were saved" in reply.text
    saved = app.store.node_settings()
    assert (saved.session_idle_timeout, saved.session_max_lifetime) == (300, 3600)
    assert audited(app)[:2] == ("loadbalancer", "node_settings")
    # The open session follows the new idle timeout at once, without a restart.
    app.clock.now += 301
    ended = app.network.get("/lbadmin/", follow_redirects=False)
    assert ended.status_code == 303


# --- in a real browser, against the whole appliance --------------------------------------------

pages = [
    ("backup-restore", "/lbadmin/maintenance/backup", "Backup & Restore"),
    ("restart-services", "/lbadmin/maintenance/restart", "Restart Services"),
    ("passwords", "/lbadmin/maintenance/passwords", "Passwords"),
    ("local-configuration", "/lbadmin/local-configuration", "Local Configuration"),
]


@needs_chromium
def test_download_a_backup_change_a_weight_and_restore_it_in_the_browser(
    browser: Any, guide: Guide, tmp_path: Path
) -> None:
    box = guide.box
    page = open_page(browser, 1280, 800, downloads=True)
    sign_in(page, box)
    page.goto(box.webui + "maintenance/backup")
    with page.expect_download() as started:
        page.click("#download-backup")
    saved = tmp_path / "backup.json"
    started.value.save_as(saved)
    assert json.loads(saved.read_text())["format"] == "balancer-configuration"

    changed = box.cli("rip", "modify", "CyberArk-PSM", "PSM1", "--weight", "7")
    assert changed.returncode == 0, changed.stderr
    assert box.client.get("/virtual-services/CyberArk-PSM/real-servers")[0]["weight"] == 7

    page.set_input_files("#backup-file", str(saved))
    page.get_by_role("button", name="Restore").click()
    playwright.expect(page.get_by_role("status")).to_contain_text("was restored as revision")
    servers = box.client.get("/virtual-services/CyberArk-PSM/real-servers")
    assert {s["label"]: s["weight"] for s in servers} == {"PSM1": 100, "PSM2": 100}
    entry = box.client.get("/audit", limit=1)[0]
    assert (entry["author"], entry["action"]) == ("loadbalancer", "restore")
    shoot(page, "backup-restore")

    page.set_input_files(
        "#backup-file",
        files=[{"name": "bad.json", "mimeType": "application/json", "buffer": b"{oops"}],
    )
    head = box.client.get("/changes")["head"]
    page.get_by_role("button", name="Restore").click()
    playwright.expect(page.get_by_role("alert")).to_contain_text("is not JSON")
    assert box.client.get("/changes")["head"] == head

    for name, path, heading in pages[1:]:
        page.goto(box.webui + path.removeprefix("/lbadmin/"))
        playwright.expect(page.get_by_role("heading", name=heading, exact=True)).to_be_visible()
        shoot(page, name)
    narrow = open_page(browser, 768, 1024)
    sign_in(narrow, box)
    for name, path, heading in pages:
        narrow.goto(box.webui + path.removeprefix("/lbadmin/"))
        playwright.expect(narrow.get_by_role("heading", name=heading, exact=True)).to_be_visible()
        # Nothing wider than the window: no sideways scrolling at 768 px.
        assert narrow.evaluate("document.documentElement.scrollWidth") <= 768
        shoot(narrow, f"{name}-768")
