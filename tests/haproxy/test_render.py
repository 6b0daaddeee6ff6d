"""haproxy.cfg as rendered from the model, compared with golden files that HAProxy accepts.

Set ``BALANCER_GOLDEN=write`` to rewrite the golden files from the renderer, then read the diff.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from balancer.engines.haproxy.limits import Limit
from balancer.engines.haproxy.paths import Paths
from balancer.engines.haproxy.render import duration, quote, render
from balancer.model import Config
from balancer.presets.psm import add_psm
from balancer.validate import parse

GOLDEN = Path(__file__).parent / "golden"
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
PATHS = Paths(Path("/var/lib/balancer"))
LIMIT = Limit(open_files=20_000, threads=2)
PSM = {
    "rdp_vip": "192.168.94.100",
    "web_vip": "192.168.94.101",
    "servers": [("PSM1", "192.168.94.105"), ("PSM2", "192.168.94.106")],
}


def psm(recommended: bool) -> Config:
    return add_psm(Config(), **PSM, recommended=recommended)


def assorted() -> Config:
    """Everything else the model can say: port ranges, IPv6, fallback, drain, halt, weights,
    connection caps, external, connect and HEAD checks, odd characters in check settings."""
    services: list[dict[str, Any]] = [
        {
            "label": "Web",
            "ip": "10.0.0.1",
            "ports": "80,8000-8010",
            "balancing": "least_connections",
            "persistence": {"mode": "none"},
            "health_check": {"type": "http", "method": "HEAD", "path": "/ok?a='b'&c=%41"},
            "fallback": {"ip": "10.0.0.99", "port": 8080},
            "client_timeout": 30,
            "server_timeout": 90.5,
            "connect_timeout": 0.25,
            "retries": 1,
            "real_servers": [
                {"label": "web1", "ip": "10.0.1.1", "weight": 5},
                {"label": "web2", "ip": "10.0.1.2", "port": 8080, "state": "drain"},
                {"label": "web3", "ip": "10.0.1.3", "state": "halt", "max_connections": 50},
            ],
        },
        {
            "label": "v6.rdp",
            "ip": "2001:db8::10",
            "ports": "3389",
            "persistence": {"mode": "source_ip", "timeout": 7200, "table_size": 5000},
            "health_check": {
                "type": "connect",
                "port": 3390,
                "also_check_service_port": True,
                "interval": 0.5,
                "timeout": 2,
                "rise": 1,
                "fall": 5,
            },
            "real_servers": [
                {"label": "a", "ip": "2001:db8::11"},
                {"label": "b", "ip": "2001:db8::12", "port": 3389},
            ],
        },
        {
            "label": "scripted",
            "ip": "10.0.0.2",
            "ports": "22",
            "health_check": {"type": "external", "script": "/usr/local/bin/check ssh"},
            "real_servers": [{"label": "s1", "ip": "10.0.2.1", "port": 2222}],
        },
        {
            "label": "odd_expect",
            "ip": "10.0.0.3",
            "ports": "443",
            "health_check": {
                "type": "https",
                "path": "/health",
                "expect": "100% 'up' $HOME",
                "port": 8443,
            },
            "real_servers": [{"label": "o1", "ip": "10.0.3.1", "port": 443}],
        },
    ]
    return parse({"virtual_services": services})


CASES = {
    "psm.cfg": lambda: psm(recommended=False),
    "psm-recommended.cfg": lambda: psm(recommended=True),
    "assorted.cfg": assorted,
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_render_matches_the_golden_file(name: str) -> None:
    rendered = render(CASES[name](), PATHS, LIMIT, revision=7)
    golden = GOLDEN / name
    if os.environ.get("BALANCER_GOLDEN") == "write":
        golden.write_text(rendered)
    assert rendered == golden.read_text(), f"{name} changed; BALANCER_GOLDEN=write rewrites it"


@pytest.mark.skipif(not Path(HAPROXY).exists(), reason="HAProxy is not installed")
@pytest.mark.parametrize("name", sorted(CASES))
def test_haproxy_accepts_the_golden_file(name: str) -> None:
    checked = subprocess.run(
        [HAPROXY, "-c", "-f", str(GOLDEN / name)], capture_output=True, text=True, timeout=30
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_an_empty_configuration_still_runs_the_sockets() -> None:
    rendered = render(Config(), PATHS, LIMIT)
    assert "\nlisten " not in rendered
    assert "stats socket /var/lib/balancer/haproxy/haproxy.sock" in rendered
    assert "BALANCER_REVISION" not in rendered


def test_the_same_model_renders_the_same_text() -> None:
    assert render(psm(True), PATHS, LIMIT, 3) == render(psm(True), PATHS, LIMIT, 3)


@pytest.mark.parametrize(
    ("seconds", "written"),
    [(43200, "12h"), (1800, "30m"), (4, "4s"), (0.2, "200ms"), (90.5, "90500ms"), (7200, "2h")],
)
def test_durations_in_the_largest_exact_unit(seconds: float, written: str) -> None:
    assert duration(seconds) == written


def test_quoting_keeps_every_character() -> None:
    assert quote("plain") == "'plain'"
    assert quote("it's $HOME") == "'it'\"'\"'s $HOME'"
