"""A backup that is broken or hostile is refused with the field and the reason, and changes
nothing: not the head revision, not what runs. Through the API and through the WebUI's Backup &
Restore page, which reads the file with ``balancer.backup.read`` before the store checks it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from balancer import backup
from balancer.validate import Invalid
from tests.webapp import WebApp, webapp

RESTORE_PAGE = "/lbadmin/maintenance/backup/restore"


@pytest.fixture
def app(tmp_path: Path) -> Iterator[WebApp]:
    with webapp(tmp_path) as running:
        running.local.post(
            "/api/v1/virtual-services", json={"label": "Web", "ip": "10.0.0.1", "ports": "80"}
        )
        running.local.post("/api/v1/commit")
        yield running


def _good(app: WebApp) -> dict[str, Any]:
    document: dict[str, Any] = app.local.get("/api/v1/backup").json()
    return document


def _with(app: WebApp, **changes: Any) -> bytes:
    return json.dumps({**_good(app), **changes}).encode()


def _services(*services: dict[str, Any]) -> dict[str, Any]:
    return {"virtual_services": list(services)}


WEB = {"label": "Web", "ip": "10.0.0.1", "ports": "80"}
SCRIPT = "<script>alert(1)</script>"


def hostile(app: WebApp) -> dict[str, tuple[bytes, str, str]]:
    """Each case: the file, the field named, and words of the reason."""
    text = json.dumps(_good(app))
    config = json.dumps(_good(app)["config"])
    head = '{"format": "balancer-configuration", "version": 1, '
    return {
        "not JSON": (b"this is not a backup", "file", "is not JSON"),
        "empty": (b"", "file", "choose a backup file"),
        "not UTF-8": (b'{"format": "\xff\xfe"}', "file", "is not UTF-8"),
        "truncated": (text[: len(text) // 2].encode(), "file", "cut short"),
        "huge": (
            # Valid but for its size: whitespace JSON allows anywhere.
            (head + " " * backup.MAX_SIZE + f'"config": {config}}}').encode(),
            "file",
            f"at most {backup.MAX_SIZE} bytes",
        ),
        "deeply nested": (
            (head + '"config": ' + "[" * 100_000 + "]" * 100_000 + "}").encode(),
            "file",
            "nested 100001 levels deep",
        ),
        "nested within the limit": (
            _with(app, config=_services(json.loads("[" * 12 + "]" * 12))),
            "config.virtual_services[0]",
            "must be an object of settings",
        ),
        "not an object": (b"[1, 2]", "", "must be a JSON object"),
        "NaN": (head.encode() + b'"config": {"virtual_services": []}, "x": NaN}', "file", "NaN"),
        "wrong format": (_with(app, format="other"), "format", "not a Balancer backup"),
        "wrong version": (_with(app, version=3), "version", "3 is not supported"),
        "version as text": (_with(app, version="1"), "version", "'1' is not supported"),
        "no configuration": (
            json.dumps({"format": "balancer-configuration", "version": 1}).encode(),
            "config",
            "is missing",
        ),
        "wrong type": (
            _with(app, config=_services({**WEB, "ports": "eighty"})),
            "config.virtual_services[Web].ports",
            "'eighty' is not a port",
        ),
        "a list for an object": (
            _with(app, config={"virtual_services": "Web"}),
            "config.virtual_services",
            "must be a list",
        ),
        "unknown field": (
            _with(app, config=_services({**WEB, "colour": "red"})),
            "config.virtual_services[Web].colour",
            "is not a known setting",
        ),
        "unknown top-level field": (_with(app, extra=1), "extra", "is not a known setting"),
        "markup in a label": (
            _with(app, config=_services({**WEB, "label": SCRIPT})),
            f"config.virtual_services[{SCRIPT}].label",
            "use letters, digits, dots, dashes and underscores",
        ),
        "duplicate keys": (
            # A parser keeping the last "config" would restore an empty configuration.
            (head + f'"config": {config}, "config": {{"virtual_services": []}}}}').encode(),
            "config",
            "is given twice",
        ),
        "port clash": (
            _with(app, config=_services(WEB, {**WEB, "label": "Other"})),
            "config.virtual_services[Other].ports",
            "10.0.0.1:80 is already used by 'Web'",
        ),
    }


CASES = [
    "not JSON", "empty", "not UTF-8", "truncated", "huge", "deeply nested",
    "nested within the limit", "not an object", "NaN", "wrong format", "wrong version",
    "version as text", "no configuration", "wrong type", "a list for an object",
    "unknown field", "unknown top-level field", "markup in a label", "duplicate keys",
    "port clash",
]  # fmt: skip


def _unchanged(app: WebApp, before: tuple[int, int | None, Any]) -> None:
    pending = app.local.get("/api/v1/changes").json()
    assert (pending["head"], pending["applied"]) == before[:2]
    assert app.local.get("/api/v1/config").json() == before[2]
    assert app.engine.revision == before[1]


def _state(app: WebApp) -> tuple[int, int | None, Any]:
    pending = app.local.get("/api/v1/changes").json()
    return pending["head"], pending["applied"], app.local.get("/api/v1/config").json()


@pytest.mark.parametrize("case", CASES)
def test_the_page_refuses_a_hostile_backup_naming_field_and_reason(app: WebApp, case: str) -> None:
    data, field, reason = hostile(app)[case]
    csrf = app.sign_in()
    before = _state(app)
    reply = app.network.post(
        RESTORE_PAGE,
        data={"csrf_token": csrf},
        files={"file": ("backup.json", data, "application/json")},
    )
    assert reply.status_code == 422, reply.text[:300]
    assert "nothing was changed" in reply.text
    shown = reply.text.replace("&#39;", "'").replace("&lt;", "<").replace("&gt;", ">")
    if field:
        assert f"<code>{field}</code>" in shown
    assert reason in shown
    assert SCRIPT not in reply.text  # markup from the file is shown as text, never run
    _unchanged(app, before)


@pytest.mark.parametrize("case", CASES)
def test_the_api_refuses_a_hostile_backup_and_changes_nothing(app: WebApp, case: str) -> None:
    data, field, reason = hostile(app)[case]
    before = _state(app)
    reply = app.local.post(
        "/api/v1/restore", content=data, headers={"content-type": "application/json"}
    )
    assert reply.status_code == 422, reply.text[:300]
    detail = reply.json()["detail"]
    # The same checks as the page's: what the page says of the file, the API says of the body.
    named = "body" if field == "file" else field
    reason = "is empty" if case == "empty" else reason  # the page asks for a file instead
    assert any(item["field"] == named and reason in item["reason"] for item in detail), detail
    _unchanged(app, before)


def test_a_good_backup_restores_through_the_page_and_is_audited(app: WebApp) -> None:
    saved = json.dumps(_good(app)).encode()
    app.local.delete("/api/v1/virtual-services/Web")
    csrf = app.sign_in()
    reply = app.network.post(
        RESTORE_PAGE,
        data={"csrf_token": csrf},
        files={"file": ("backup.json", saved, "application/json")},
        follow_redirects=False,
    )
    assert reply.status_code == 303
    assert app.local.get("/api/v1/config").json()["virtual_services"][0]["label"] == "Web"
    entry = app.store.audit_log(1)[0]
    assert (entry.author, entry.action) == ("loadbalancer", "restore")


def test_backup_read_counts_depth_outside_strings() -> None:
    brackets = b'{"format": "[[[[[[[[[[[[[[[[[[[[[[[[[", "config": {}}'
    assert backup.read(brackets)["format"].startswith("[[[")
    with pytest.raises(Invalid, match="nested 17 levels deep"):
        backup.read(b"[" * 17 + b"]" * 17)


def test_the_download_is_the_api_backup_as_a_file(app: WebApp) -> None:
    app.sign_in()
    reply = app.network.get("/lbadmin/maintenance/backup/download")
    assert reply.headers["content-disposition"].startswith('attachment; filename="balancer-')
    document = reply.json()
    del document["exported"]
    expected = _good(app)
    del expected["exported"]
    assert document == expected
