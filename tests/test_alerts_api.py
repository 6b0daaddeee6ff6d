"""The alert channels through the API: added, listed, changed, removed, and Send test; their
secrets never in an answer, the audit log or the log."""

from __future__ import annotations

import json
import logging
import socket
from pathlib import Path

import pytest

from tests.webapp import webapp

HMAC_KEY = "planted-hmac-key-1"
SMTP_PASSWORD = "planted-smtp-password-2"


def test_channels_through_the_api_never_show_a_secret(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with webapp(tmp_path) as app, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        udp.settimeout(10)
        api = app.local
        hook = {"name": "ops", "kind": "webhook", "url": "http://127.0.0.1:9/", "secret": HMAC_KEY}
        mail = {
            "name": "mail",
            "kind": "email",
            "host": "smtp.example.com",
            "username": "alerts",
            "sender": "lb1@example.com",
            "recipients": ["ops@example.com"],
            "secret": SMTP_PASSWORD,
        }
        answers = [api.post("/api/v1/alerts/channels", json=body) for body in (hook, mail)]
        assert [a.status_code for a in answers] == [201, 201], answers[1].text
        assert answers[0].json()["secret"] == "set"
        again = api.post("/api/v1/alerts/channels", json=hook)
        assert again.status_code == 409
        bad = api.post("/api/v1/alerts/channels", json={**mail, "name": "m2", "port": 0})
        assert bad.status_code == 422
        assert bad.json()["detail"][0]["field"] == "settings.email.port"
        # A change that leaves the secret out keeps it.
        changed = api.put("/api/v1/alerts/channels/mail", json={**mail, "secret": None, "port": 25})
        assert changed.json()["port"] == 25
        assert app.store.alert_channels()[0][2] == SMTP_PASSWORD
        # PATCH: only what is given; an empty secret keeps the saved one, null a default.
        amended = api.patch(
            "/api/v1/alerts/channels/mail",
            json={"username": "lb1", "ca_file": None, "port": None, "secret": ""},
        )
        assert amended.status_code == 200, amended.text
        assert (amended.json()["username"], amended.json()["port"]) == ("lb1", 587)
        assert amended.json()["recipients"] == ["ops@example.com"]
        assert app.store.alert_channels()[0][2] == SMTP_PASSWORD
        rekeyed = api.patch("/api/v1/alerts/channels/ops", json={"secret": "new-key"})
        assert rekeyed.json()["secret"] == "set"
        assert app.store.alert_channels()[1][2] == "new-key"
        kind = api.patch("/api/v1/alerts/channels/ops", json={"kind": "syslog"})
        assert kind.status_code == 422
        assert kind.json()["detail"][0]["field"] == "kind"
        wrong = api.patch("/api/v1/alerts/channels/ops", json={"url": "ftp://x"})
        assert wrong.json()["detail"][0]["field"] == "settings.webhook.url"
        assert api.patch("/api/v1/alerts/channels/none", json={}).status_code == 404
        udp_port = udp.getsockname()[1]
        syslog = {"name": "syslog", "kind": "syslog", "host": "127.0.0.1", "port": udp_port}
        assert api.post("/api/v1/alerts/channels", json=syslog).status_code == 201
        sent = api.post("/api/v1/alerts/channels/syslog/test")
        assert sent.json() == {"channel": "syslog", "sent": True}
        assert b"balancer - test - test alert from" in udp.recv(4096)
        refused = api.post("/api/v1/alerts/channels/ops/test")
        assert refused.status_code == 502
        assert refused.json()["detail"][0]["reason"].startswith("ops: not sent: ")
        listed = api.get("/api/v1/alerts/channels").json()
        assert [(c["name"], c["secret"]) for c in listed] == [
            ("mail", "set"),
            ("ops", "set"),
            ("syslog", None),
        ]
        assert api.delete("/api/v1/alerts/channels/ops").status_code == 204
        assert api.delete("/api/v1/alerts/channels/ops").status_code == 404
        audit = json.dumps([entry.detail for entry in app.store.audit_log()])
        everything = [
            *(a.text for a in answers),
            changed.text,
            amended.text,
            rekeyed.text,
            refused.text,
            json.dumps(listed),
            audit,
            caplog.text,
        ]
    for secret in (HMAC_KEY, SMTP_PASSWORD):
        assert not [text for text in everything if secret in text]
