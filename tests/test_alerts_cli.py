"""balancer alerts: channels added, listed, tested and removed from the command line; and an
alert from a running appliance: a real server that goes down, told by syslog."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from balancer.controller import SUPERVISE_INTERVAL
from balancer.store import Store
from tests.appliance import Appliance, appliance, free_port
from tests.test_cli import balancer

VIP = "127.96.2.10"
RIP = "127.96.2.11"


def test_alert_channels_from_the_command_line_and_an_alert_from_the_appliance(
    tmp_path: Path,
) -> None:
    with (
        appliance(tmp_path) as box,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp,
    ):
        udp.bind(("127.0.0.1", 0))
        udp.settimeout(20)
        port = str(udp.getsockname()[1])
        added = balancer(
            box, "alerts", "add", "sys", "syslog", "--host", "127.0.0.1", "--port", port
        )
        assert (added.returncode, added.stdout) == (0, "alert channel sys (syslog) added\n")
        tested = balancer(box, "alerts", "test", "sys")
        assert tested.stdout == "test alert sent through sys\n", tested.stderr
        assert b" balancer - test - test alert from " in udp.recv(4096)

        url = "http://127.0.0.1:9/hook"
        hook = balancer(
            box, "alerts", "add", "hook", "webhook", "--url", url, "--secret-stdin", stdin="k3y\n"
        )
        assert hook.returncode == 0, hook.stderr
        listed = balancer(box, "alerts", "list")
        assert listed.stdout.splitlines() == [
            f"hook{' ' * 20} webhook  {url}  secret set",
            f"sys{' ' * 21} syslog   udp://127.0.0.1:{port}",
        ]
        assert "k3y" not in listed.stdout + balancer(box, "alerts", "list", "--json").stdout
        # Changed: only what is given; the secret kept unless a new one is read.
        url = "http://127.0.0.1:9/hook2"
        changed = balancer(box, "alerts", "set", "hook", "--url", url)
        assert changed.stdout == "alert channel hook (webhook) changed\n", changed.stderr
        assert hook_saved(box) == ({"kind": "webhook", "url": url, "timeout": 5.0}, "k3y")
        rekeyed = balancer(box, "alerts", "set", "hook", "--secret-stdin", stdin="n3w\n")
        assert rekeyed.returncode == 0, rekeyed.stderr
        assert hook_saved(box)[1] == "n3w"
        assert balancer(box, "alerts", "set", "nope", "--port", "1").stderr == (
            "error: no alert channel named nope\n"
        )
        refused = balancer(box, "alerts", "test", "hook")
        assert refused.returncode == 1
        assert refused.stderr.startswith("error: hook: not sent: ConnectError")
        assert len(refused.stderr.splitlines()) == 1
        bad = balancer(box, "alerts", "add", "m", "email", "--host", "smtp", "--from", "x")
        assert bad.returncode == 1
        assert bad.stderr.startswith("error: settings.email.sender: ")
        assert balancer(box, "alerts", "remove", "hook").returncode == 0
        assert balancer(box, "alerts", "remove", "hook").stderr == (
            "error: no alert channel named hook\n"
        )

        # From the event stream: the real server is down, comes up, then goes down.
        rip_port = free_port([RIP])
        box.client.post(
            "/virtual-services",
            {"label": "Web", "ip": VIP, "ports": str(free_port([VIP])),
             "health_check": {"interval": 0.2, "fall": 1, "rise": 1},
             "real_servers": [{"label": "web1", "ip": RIP, "port": rip_port}]},
        )  # fmt: skip
        box.client.post("/commit")
        for _ in range(100):
            if box.server("Web", "web1")["health"] == "down":
                break
            time.sleep(0.05)
        # The supervisor's next look sees it down: its first look at a server is not news.
        time.sleep(SUPERVISE_INTERVAL + 0.5)
        with socket.create_server((RIP, rip_port)):
            up = udp.recv(4096).decode()
        # web1 down is folded into the next message on its key (its window opened with the
        # up); that Web has no real server left is news on a key of its own.
        down = udp.recv(4096).decode()
    assert up.endswith(" balancer - health_changed - real server web1 of Web is up: connected")
    assert down.endswith(" balancer - service_down - virtual service Web has no real server up")


def hook_saved(box: Appliance) -> tuple[dict[str, object], str]:
    with Store(box.data_dir / "balancer.db") as store:
        return next((s, secret) for name, s, secret in store.alert_channels() if name == "hook")
