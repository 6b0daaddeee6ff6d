"""Local Configuration > Alerts in the WebUI: a channel added from its form (its secret never
shown back), refused naming the field, tested with Send test, and removed."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.webapp import webapp

PAGE = "/lbadmin/local-configuration/alerts"
PASSWORD = "planted-smtp-password-3"


def test_add_test_and_remove_alert_channels_in_the_webui(tmp_path: Path) -> None:
    with webapp(tmp_path) as app, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        udp.settimeout(10)
        with socket.socket() as unused:  # a port nothing listens on: Send test fails there
            unused.bind(("127.0.0.1", 0))
            closed = str(unused.getsockname()[1])
        csrf = app.sign_in()
        web = app.network
        menu = web.get("/lbadmin/local-configuration").text
        assert f'<a href="{PAGE}">Alerts</a>' in menu
        email = {
            "csrf_token": csrf,
            "kind": "email",
            "name": "ops-mail",
            "email_host": "127.0.0.1",
            "email_port": closed,
            "email_starttls": "on",
            "email_username": "lb1",
            "secret": PASSWORD,
            "email_sender": "lb1@example.com",
            "email_recipients": "ops@example.com noc@example.com",
        }
        added = web.post(f"{PAGE}/add", data=email, follow_redirects=False)
        assert (added.status_code, added.headers["location"]) == (
            303,
            f"{PAGE}?done=added&name=ops-mail",
        )
        (saved,) = app.store.alert_channels()
        assert saved[1]["recipients"] == ["ops@example.com", "noc@example.com"]
        assert saved[2] == PASSWORD
        bad = web.post(f"{PAGE}/add", data={**email, "name": "m2", "email_sender": "nobody"})
        assert bad.status_code == 422
        assert "<code>settings.email.sender</code>" in bad.text
        assert 'value="lb1"' in bad.text, "what was typed is kept to correct"

        syslog = {
            "csrf_token": csrf,
            "kind": "syslog",
            "name": "siem",
            "syslog_transport": "udp",
            "syslog_host": "127.0.0.1",
            "syslog_port": str(udp.getsockname()[1]),
        }
        assert web.post(f"{PAGE}/add", data=syslog, follow_redirects=False).status_code == 303
        tested = web.post(f"{PAGE}/siem/test", data={"csrf_token": csrf})
        assert "A test alert was sent through siem." in tested.text
        assert b"balancer - test - test alert from" in udp.recv(4096)
        failed = web.post(f"{PAGE}/ops-mail/test", data={"csrf_token": csrf})
        assert failed.status_code == 502
        assert "ops-mail: not sent: ConnectionRefusedError" in failed.text
        listing = web.get(PAGE).text
        assert "ops-mail" in listing
        assert f"127.0.0.1:{closed} to ops@example.com, noc@example.com" in listing
        assert web.post(f"{PAGE}/ops-mail/remove", data={"csrf_token": csrf}).status_code == 200
        assert [name for name, _, _ in app.store.alert_channels()] == ["siem"]
        pages = [menu, added.text, bad.text, tested.text, failed.text, listing]
    assert not [page for page in pages if PASSWORD in page]
