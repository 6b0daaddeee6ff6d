"""The Support download: every secret the test plants (a user's password and its hash, an API
key and its digest, the WebUI's private key, a session's token, a password in a log line and a
PEM private key in the log, an alert password and a webhook secret in a JSON document) is
found in no member of the archive, each decompressed; the archive holds what its README says;
it is audited with who downloaded it. In process, on tests/webapp.py's fake engine; then the
guide's appliance, downloaded in chromium from the Support page and with `balancer support
archive` (which imports no server module)."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from balancer import first_start, support, totp, users
from balancer.directory import save as save_directory
from balancer.front.access import SESSION_COOKIE
from balancer.model import Pair
from balancer.store import TwoFactor
from balancer.support import REDACTED, redact, redact_text
from tests.appliance import Guide
from tests.test_cli_imports import NOT_FOR_A_CLIENT, imported
from tests.webapp import WebApp, webapp

ARCHIVE = "/api/v1/support/archive"
PASSWORD = "planted-Password-7731"
ALERT_PASSWORD = "planted-smtp-9902"
WEBHOOK_SECRET = "planted-hmac-4410"
LOGGED_PASSWORD = "planted-logged-5521"


@pytest.fixture
def app(tmp_path: Path) -> Iterator[WebApp]:
    with webapp(tmp_path) as running:
        yield running


def members(data: bytes) -> dict[str, str]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        found = {}
        for member in archive.getmembers():
            extracted = archive.extractfile(member)
            assert extracted is not None
            found[member.name.split("/", 1)[1]] = extracted.read().decode()
    return found


def private_key_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def key_body(pem: str) -> list[str]:
    """The base64 lines of a PEM block: what must not be found, in any part."""
    return [line for line in pem.splitlines() if line and not line.startswith("-----")]


def test_the_archive_holds_no_planted_secret(app: WebApp, tmp_path: Path) -> None:
    users.add_user(app.store, "operator", PASSWORD, author="test")
    password_hash = app.store.password_hash("operator")
    _, api_key = users.add_api_key(app.store, "ci", "operator", author="test")
    webui_key = first_start.certificate(tmp_path, "balancer.test").read_text()
    assert "PRIVATE KEY" in webui_key
    app.sign_in()
    session = app.network.cookies[SESSION_COOKIE]
    # An alert channel's settings as a JSON document the store keeps (issue 14's alerts).
    alerts = {"email": {"smtp_password": ALERT_PASSWORD}, "webhook": {"secret": WEBHOOK_SECRET}}
    app.store.audit(author="test", action="alerts", detail=alerts)
    logged_key = private_key_pem()
    # Two-factor sign-in: a TOTP secret and a recovery code's digest, as an HA pair's users
    # snapshot carries them, and the secret in an authenticator's otpauth:// address.
    totp_secret = totp.new_secret()
    recovery = totp.recovery_digest(totp.new_recovery_codes()[0])
    enrolled = TwoFactor(totp_secret, (recovery,))
    app.store.set_two_factor("operator", enrolled, author="test", action="two_factor_enrol")
    snapshot = {"users": [{"name": "operator", "totp": totp_secret, "recovery": [recovery]}]}
    (tmp_path / "logs").mkdir(exist_ok=True)
    (tmp_path / "logs" / "balancer.log").write_text(
        json.dumps({"time": 1.0, "message": "alert settings saved", "settings": alerts})
        + "\n"
        + f"smtp login with password={LOGGED_PASSWORD} refused\n"
        + json.dumps({"time": 2.0, "message": f"loaded {logged_key}"})
        + "\n"
        + logged_key
        + "\n"
        + json.dumps({"time": 3.0, "message": "users sent", "snapshot": snapshot})
        + "\n"
        + f"scanned {totp.uri(totp_secret, 'operator', 'balancer.test')}\n"
    )
    planted = {
        "password": PASSWORD,
        "password hash": password_hash,
        "API key": api_key,
        "API key digest": users.key_digest(api_key),
        "session": session,
        "alert password": ALERT_PASSWORD,
        "webhook secret": WEBHOOK_SECRET,
        "logged password": LOGGED_PASSWORD,
        "TOTP secret": totp_secret,
        "recovery code digest": recovery,
        **{f"WebUI key line {n}": line for n, line in enumerate(key_body(webui_key))},
        **{f"logged key line {n}": line for n, line in enumerate(key_body(logged_key))},
    }

    reply = app.local.get(ARCHIVE, headers={"X-Balancer-User": "root"})

    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == support.MEDIA_TYPE
    assert "attachment" in reply.headers["content-disposition"]
    found = members(reply.content)
    for name, text in found.items():
        leaked = [what for what, secret in planted.items() if secret and secret in text]
        assert leaked == [], f"{name} holds {leaked}"
        assert "PRIVATE KEY-----" not in text, name
    # What was redacted is marked, and what is not secret is still there to read.
    assert REDACTED in found["logs/balancer.log"]
    assert "smtp login with password=" in found["logs/balancer.log"]
    assert "alert settings saved" in found["logs/balancer.log"]
    assert "operator" in found["node/users.json"]
    assert '"name": "ci"' in found["node/users.json"]


def test_the_archive_holds_what_its_readme_says_and_is_audited(app: WebApp) -> None:
    app.local.post(
        "/api/v1/virtual-services",
        json={"label": "PSM", "ip": "127.0.0.5", "ports": "3389"},
        headers={"X-Balancer-User": "root"},
    )
    reply = app.local.get(ARCHIVE, headers={"X-Balancer-User": "root"})
    found = members(reply.content)
    assert {
        "README.txt",
        "configuration/saved.json",
        "configuration/revisions.json",
        "node/settings.json",
        "node/users.json",
        "versions.json",
        "engine/status.json",
        "engine/configuration.txt",
        "audit.json",
        "system/node.json",
        "system/meminfo.txt",
    } <= set(found)
    assert not [name for name in found if name.endswith(".error.txt")]
    assert "ha/view.json" not in found  # a node standing alone
    assert (
        json.loads(found["configuration/saved.json"])["config"]["virtual_services"][0]["label"]
        == "PSM"
    )
    versions = json.loads(found["versions.json"])
    assert set(versions) >= {"balancer", "python", "haproxy", "keepalived", "kernel"}
    audit = json.loads(found["audit.json"])
    assert audit[0]["author"] == "root"
    assert audit[0]["action"] == "support_archive"
    assert "What was redacted" in found["README.txt"]
    entry = app.store.audit_log(1)[0]
    assert (entry.author, entry.action) == ("root", "support_archive")


def test_the_support_page_offers_the_download_and_it_is_audited_as_the_signed_in_user(
    app: WebApp,
) -> None:
    app.sign_in()
    page = app.network.get("/lbadmin/support")
    assert page.status_code == 200
    assert 'href="/lbadmin/support/archive"' in page.text
    assert 'aria-current="page">Support<' in page.text
    reply = app.network.get("/lbadmin/support/archive")
    assert reply.status_code == 200
    assert "README.txt" in "".join(members(reply.content))
    entry = app.store.audit_log(1)[0]
    assert (entry.author, entry.action) == ("loadbalancer", "support_archive")


def test_the_archive_holds_the_directory_settings_without_their_secret(app: WebApp) -> None:
    secret = "planted-radius-secret-6613"
    settings = {"kind": "radius", "servers": ["127.0.0.1"], "default_role": "viewer"}
    save_directory(app.store, settings, secret, author="test")
    reply = app.local.get(ARCHIVE, headers={"X-Balancer-User": "root"})
    found = members(reply.content)
    assert [name for name, text in found.items() if secret in text] == []
    shown = json.loads(found["node/directory.json"])
    assert (shown["kind"], shown["servers"], shown["secret"]) == ("radius", ["127.0.0.1"], REDACTED)
    assert "node/directory.json" in found["README.txt"]


def test_redact_by_field_name_and_keep_markers_and_the_rest() -> None:
    document = {
        "smtp": {"host": "mail.test", "password": "x1", "password_set": True},
        "webhook_secret": "x2",
        "api_keys": [{"name": "ci", "digest": "x3"}],
        "tokens": ["x4"],
        "hash": None,
        "note": "password: x5 and auth_pass x6",
    }
    assert redact(document) == {
        "smtp": {"host": "mail.test", "password": REDACTED, "password_set": True},
        "webhook_secret": REDACTED,
        "api_keys": [{"name": "ci", "digest": REDACTED}],
        "tokens": [REDACTED],
        "hash": None,
        "note": f"password: {REDACTED} and auth_pass {REDACTED}",
    }


def test_redact_text_removes_a_private_key_block_whole_or_cut_at_either_end() -> None:
    pem = private_key_pem()
    start, end = pem[: len(pem) // 2], pem[len(pem) // 2 :]
    for text in (f"before\n{pem}after\n", f"before\n{start}", f"{end}after\n"):
        cleaned = redact_text(text)
        assert not [line for line in key_body(pem) if line in cleaned]
        assert REDACTED in cleaned
    assert redact_text("Public key: sha256 abc") == "Public key: sha256 abc"
    assert redact_text('{"api_key": "blb_abc"}') == f'{{"api_key": {REDACTED}}}'


def test_a_node_of_a_pair_adds_the_pairs_view(app: WebApp) -> None:
    pair = Pair(role="secondary", local_address="127.0.0.2", peer_address="127.0.0.3")
    settings = app.store.node_settings().model_copy(update={"pair": pair})
    app.store.save_node_settings(settings, author="test")
    found = members(app.local.get(ARCHIVE, headers={"X-Balancer-User": "root"}).content)
    view = json.loads(found["ha/view.json"])["view"]
    assert view["this"]["role"] == "secondary"
    assert json.loads(found["node/settings.json"])["pair"]["peer_address"] == "127.0.0.3"


def test_the_support_page_and_the_command_download_the_archive_of_the_guides_appliance(
    browser: Any, guide: Guide, tmp_path: Path
) -> None:
    from tests.browser import open_page, shoot, sign_in

    box = guide.box
    written = tmp_path / "written.tar.gz"
    code, modules = imported(box, "support", "archive", "-o", str(written))
    assert code == 0
    assert [m for m in modules if m.startswith(NOT_FOR_A_CLIENT)] == []
    found = members(written.read_bytes())
    assert [name for name in found if name.endswith(".error.txt")] == []
    assert {"logs/balancer.log", "engine/status.json", "system/addresses.json"} <= set(found)
    assert json.loads(found["engine/status.json"])["engine"]["engine"] == box.engine

    page = open_page(browser, 1280, 800, downloads=True)
    sign_in(page, box)
    page.get_by_role("navigation").get_by_role("link", name="Support").click()
    page.wait_for_url("**/lbadmin/support")
    shoot(page, "support")
    with page.expect_download() as started:
        page.click("#download-support")
    assert started.value.suggested_filename.startswith("balancer-support-")
    saved = tmp_path / "support.tar.gz"
    started.value.save_as(saved)
    found = members(saved.read_bytes())
    saved_config = json.loads(found["configuration/saved.json"])["config"]
    assert [s["label"] for s in saved_config["virtual_services"]] == [
        s["label"] for s in box.client.get("/virtual-services")
    ]
    entry = box.client.get("/audit", limit=1)[0]
    assert (entry["author"], entry["action"]) == ("loadbalancer", "support_archive")
