"""Roles on a real appliance (`balancer serve`): users and keys given roles by the command line,
a sample of what each role may and may not do over HTTPS with its key, `balancer --url` with a
viewer's key refused in one line, and a viewer in Chromium shown no button it may not use and
refused when posting anyway."""

from __future__ import annotations

import json
import re
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.appliance import WEBUI_HOST, Appliance, appliance, free_port
from tests.browser import chromium, needs_chromium, open_page, playwright, shoot
from tests.test_cli import balancer

VIP = "127.96.4.100"
PASSWORDS = {"viewer": "the read-only password", "operator": "the on-call password"}


@dataclass(frozen=True)
class Box:
    box: Appliance
    url: str
    certificate: Path
    keys: dict[str, str]  # role -> a key of a user of that role

    def https(self, role: str) -> httpx.Client:
        # The appliance's own certificate is the one trusted; it names the appliance's host
        # name, not the loopback address the test reaches it on.
        trust = ssl.create_default_context(cafile=self.certificate)
        trust.check_hostname = False
        return httpx.Client(
            base_url=self.url,
            verify=trust,
            headers={"Authorization": f"Bearer {self.keys[role]}"},
            timeout=30,
        )


def key(box: Appliance, owner: str, *role: str) -> str:
    made = balancer(box, "key", "create", f"{owner}-{'-'.join(role)}", "--owner", owner, *role)
    assert made.returncode == 0, made.stderr
    return made.stdout.strip()


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Box]:
    root = tmp_path_factory.mktemp("roles")
    with appliance(root) as box:
        certificate = root / "appliance.pem"
        box.certificate(certificate)
        for role, password in PASSWORDS.items():
            added = balancer(
                box, "user", "add", role, "--role", role, "--password-stdin", stdin=password + "\n"
            )
            assert added.returncode == 0, added.stderr
        keys = {
            "viewer": key(box, "viewer"),
            "operator": key(box, "operator"),
            "administrator": key(box, "loadbalancer"),
            "narrowed": key(box, "loadbalancer", "--role", "viewer"),
        }
        url = f"https://{WEBUI_HOST}:{box.https_port}"
        yield Box(box, url, certificate, keys)


def test_each_role_may_what_the_table_says_over_https(running: Box) -> None:
    port = free_port([VIP])
    vip = {"label": "Roles-Web", "ip": VIP, "ports": str(port)}
    rip = {"label": "web1", "ip": "127.0.0.1", "port": port}
    asked: dict[str, list[int]] = {}
    for role in ("viewer", "narrowed", "operator", "administrator"):
        with running.https(role) as https:
            asked[role] = [
                https.get("/api/v1/status").status_code,
                https.get("/api/v1/users").status_code,
                https.post("/api/v1/virtual-services", json=vip).status_code,
                https.post("/api/v1/virtual-services/Roles-Web/real-servers", json=rip).status_code,
                https.post("/api/v1/commit").status_code,
            ]
    # The operator asked before the administrator saved: its commit had nothing to run, which
    # is the commit's own answer, not the gate's.
    operator_commit = asked["operator"].pop()
    assert operator_commit != 403
    assert asked == {
        "viewer": [200, 403, 403, 403, 403],
        "narrowed": [200, 403, 403, 403, 403],
        "operator": [200, 403, 403, 403],
        "administrator": [200, 200, 201, 201, 200],
    }
    # Saved by the administrator (now applied), drained by the operator.
    with running.https("operator") as https:
        drained = https.post(
            "/api/v1/virtual-services/Roles-Web/real-servers/web1/state", json={"state": "drain"}
        )
    assert drained.status_code < 300, drained.text
    with running.https("viewer") as https:
        refused = https.post("/api/v1/commit")
    assert refused.json() == {
        "detail": [
            {
                "field": "role",
                "reason": "this needs the role operator or above; this API key of viewer's "
                "has the role viewer",
            }
        ]
    }


def test_the_command_line_from_elsewhere_says_the_refusal_in_one_line(running: Box) -> None:
    box = running.box
    env = {
        "BALANCER_URL": running.url,
        "BALANCER_API_KEY": running.keys["viewer"],
        "BALANCER_DIR": "/nowhere",
        "BALANCER_CA_FILE": str(running.certificate),
    }
    listed = balancer(box, "vip", "list", env=env)
    assert listed.returncode == 0, listed.stderr
    port = str(free_port([VIP]))
    refused = balancer(box, "vip", "add", "Viewer-Web", "--ip", VIP, "--ports", port, env=env)
    assert refused.returncode == 1
    assert refused.stderr == (
        "error: role: this needs the role administrator or above; this API key of viewer's has "
        "the role viewer\n"
    )
    # On the appliance itself the command line is root's: an administrator's.
    users = json.loads(balancer(box, "user", "list", "--json").stdout)
    assert {u["name"]: u["role"] for u in users} == {
        "loadbalancer": "administrator",
        "operator": "operator",
        "viewer": "viewer",
    }
    keys = {k["name"]: k["role"] for k in json.loads(balancer(box, "key", "list", "--json").stdout)}
    assert keys["loadbalancer---role-viewer"] == "viewer"
    assert keys["viewer-"] is None
    wider = balancer(box, "key", "create", "wide", "--owner", "viewer", "--role", "operator")
    assert wider.returncode == 1
    assert wider.stderr == "error: role: operator is wider than viewer's own role, viewer\n"
    last = balancer(box, "user", "set-role", "loadbalancer", "viewer")
    assert last.returncode == 1
    assert "'loadbalancer' is the last administrator" in last.stderr


@needs_chromium
def test_a_viewer_sees_no_button_it_may_not_use_and_is_refused_posting_anyway(
    running: Box,
) -> None:
    box = running.box
    port = str(free_port([VIP]))
    saved = balancer(box, "vip", "add", "Pending-Web", "--ip", VIP, "--ports", port)
    assert saved.returncode == 0, saved.stderr  # a change saved, not committed
    with chromium() as browser:
        page = open_page(browser, 1280, 900)
        page.goto(box.webui)
        page.wait_for_url("**/lbadmin/sign-in")
        page.fill("#username", "viewer")
        page.fill("#password", PASSWORDS["viewer"])
        page.click("button[type=submit]")
        page.wait_for_url("**/lbadmin/")
        expect = playwright.expect
        expect(page.get_by_role("heading", name="Commit changes")).to_be_visible()
        expect(page.get_by_role("button", name="Commit")).to_have_count(0)
        expect(page.locator("form.actions")).to_have_count(0)  # no Drain, Halt, Online
        menu = page.get_by_role("navigation", name="Main menu")
        expect(menu.get_by_role("link", name="Reports")).to_be_visible()
        expect(menu.get_by_role("link", name="Local Configuration")).to_have_count(0)
        expect(menu.get_by_role("link", name="Maintenance")).to_have_count(0)
        shoot(page, "roles-viewer-overview")
        page.goto(f"{running.url}/lbadmin/virtual-services")
        expect(page.get_by_role("row", name=re.compile("Pending-Web"))).to_be_visible()
        expect(page.get_by_role("link", name="Add a new Virtual Service")).to_have_count(0)
        expect(page.get_by_role("link", name="Modify Pending-Web")).to_have_count(0)
        # Posting anyway, with the session's own CSRF token: the server refuses.
        headers = json.loads(page.locator("body").get_attribute("hx-headers"))
        posted = page.request.post(
            f"{running.url}/lbadmin/commit", form={"csrf_token": headers["X-CSRF-Token"]}
        )
        assert posted.status == 403
        assert "needs the role operator or above, and viewer has the role viewer" in posted.text()
        page.goto(f"{running.url}/lbadmin/maintenance/passwords")
        expect(page.get_by_role("heading", name="Not for your role")).to_be_visible()
        shoot(page, "roles-viewer-refused")
    assert box.client.get("/changes")["changes"]  # still saved, not committed
