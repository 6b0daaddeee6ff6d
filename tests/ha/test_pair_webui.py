"""Pairing from the Primary's WebUI in Chromium (issue 12), on each engine: two real nodes in
namespaces (``tests.ha.cluster``), the browser in the client's (``tests.ha.webui_pairing``).
The guide's form pairs them, the page shows the pair, both nodes say so, and the VIPs answer
from one node with the Primary's configuration running on both."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from balancer.ha.keepalived import KEEPALIVED
from tests.ha.cluster import MANAGEMENT_PORT, PASSWORD, PSM_ADDRESSES, ROOT, topology, wait_for
from tests.netns import needs_netns

pytest.importorskip("playwright.sync_api")
CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [
    needs_netns,
    pytest.mark.skipif(shutil.which(KEEPALIVED) is None, reason="keepalived is not installed"),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (make system)"),
    pytest.mark.slow,
]


@pytest.mark.parametrize("engine", ["builtin", "haproxy"])
def test_pairing_from_the_primarys_webui_in_chromium(tmp_path: Path, engine: str) -> None:
    with topology(tmp_path, engine) as pair:
        revision = pair.commit_psm()["revision"]
        primary, secondary = pair.primary, pair.secondary
        browser = subprocess.run(
            pair.client.host.command(
                sys.executable, "-m", "tests.ha.webui_pairing",
                f"https://{primary.address}:{MANAGEMENT_PORT}/lbadmin/", primary.address,
                secondary.address, str(MANAGEMENT_PORT), PASSWORD, secondary.fingerprint,
            ),
            cwd=ROOT, capture_output=True, text=True, timeout=180, check=False,
        )  # fmt: skip
        assert browser.returncode == 0, browser.stdout + browser.stderr[-2000:]
        assert browser.stdout.splitlines() == [
            "High Availability Configuration - primary",
            secondary.address,
        ]
        for node, role in ((primary, "primary"), (secondary, "secondary")):
            view = node.pair_view()
            assert view is not None
            assert view["this"]["role"] == role
        wait_for(
            "the Secondary running the Primary's revision",
            lambda: secondary.client.get("/status")["engine"]["revision"] == revision,
        )
        owner = pair.settled()
        with pair.client.open() as session:
            assert session.server in PSM_ADDRESSES
            assert pair.carrier(session) is owner
