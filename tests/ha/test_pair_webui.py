"""Pairing from the Primary's WebUI in Chromium (issue 12), on each engine: two real nodes in
namespaces, unpaired (``tests.ha.cluster``), and a person at the keyboard of a browser on the
client's host. The guide's 14.1.2: sign in to the Primary, Cluster Configuration >
High-Availability Configuration, the Local IP address, the peer's address and the password of
its own loadbalancer user, the fingerprint the page shows compared with the one the peer's
``balancer serve`` printed (and its certificate), Add new node; the steps, then the pair. Then
the status bar says Primary with the link, and the Secondary's WebUI, signed in to with the
Primary's password, says Secondary and that its configuration is read-only.

Chromium runs inside the client's namespace (a script given to Playwright as the browser runs
it there with ``ip netns exec``): the nodes' addresses are reached only from the switch.
"""

from __future__ import annotations

import re
import shlex
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from balancer import certificates
from balancer.ha.keepalived import KEEPALIVED
from tests.ha.cluster import MANAGEMENT_PORT, PASSWORD, Node, topology, wait_for
from tests.netns import Host, needs_netns

browser = pytest.importorskip("tests.browser")
pytestmark = [
    needs_netns,
    pytest.mark.skipif(shutil.which(KEEPALIVED) is None, reason="keepalived is not installed"),
    browser.needs_chromium,
    pytest.mark.slow,
]
# The Secondary's own password before pairing; the Primary's users replace its users.
PEER_PASSWORD = "the Secondary's own appliance password"
# Either node may be the Active one: the first keepalived to wait out the silence takes the VIPs.
BAR = r"Role\s*{role}\s*State\s*(Active|Passive)\s*Link\s*\d+(\.\d)? s ago"


@contextmanager
def chromium_in(host: Host, where: Path) -> Iterator[Any]:
    """Debian's chromium in ``host``'s namespace, through a script Playwright starts as the
    browser (its pipes to the driver are inherited through ``ip netns exec``)."""
    script = where / "chromium-in-netns"
    script.write_text(f'#!/bin/sh\nexec {shlex.join(host.command(str(browser.CHROMIUM)))} "$@"\n')
    script.chmod(0o755)
    with browser.chromium(script) as launched:
        yield launched


def sign_in(page: Any, node: Node, password: str) -> None:
    """By keyboard, on the sign-in page the WebUI sends a new visitor to."""
    expect = browser.playwright.expect
    page.goto(f"https://{node.address}:{MANAGEMENT_PORT}/lbadmin/")
    page.wait_for_url("**/lbadmin/sign-in")
    expect(page.locator("#username")).to_be_focused()
    page.keyboard.type("loadbalancer")
    page.keyboard.press("Tab")
    expect(page.locator("#password")).to_be_focused()
    page.keyboard.type(password)
    with page.expect_navigation(url="**/lbadmin/"):
        page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="System Overview")).to_be_visible()


def menu(page: Any, entry: str) -> None:
    with page.expect_navigation():
        page.get_by_role("navigation", name="Main menu").get_by_role("link", name=entry).click()


def focus_next(page: Any, selector: str) -> None:
    """Tab, and wait to see the focus on ``selector`` before typing."""
    page.keyboard.press("Tab")
    browser.playwright.expect(page.locator(selector)).to_be_focused()


@pytest.mark.parametrize("engine", ["builtin", "haproxy"])
def test_a_person_pairs_the_nodes_from_the_primarys_webui(tmp_path: Path, engine: str) -> None:
    expect = browser.playwright.expect
    with topology(tmp_path / "nodes", engine) as pair:
        primary, secondary = pair.primary, pair.secondary
        revision = pair.commit_psm()["revision"]
        secondary.client.put("/users/loadbalancer/password", {"password": PEER_PASSWORD})
        printed = secondary.fingerprint
        certificate = (secondary.data_dir / "webui.pem").read_bytes()
        assert printed == certificates.describe(certificate).fingerprint
        with chromium_in(pair.client.host, tmp_path) as launched:
            page = browser.open_page(launched, 1280, 900)
            sign_in(page, primary, PASSWORD)
            menu(page, "High-Availability Configuration")
            form = page.get_by_role("heading", name="Create a Clustered Pair", exact=True)
            expect(form).to_be_visible()
            chosen = page.locator("#f-local-address")
            chosen.focus()
            expect(chosen).to_be_focused()
            for _ in range(10):  # this node's own addresses, chosen with the arrow keys
                if chosen.input_value() == primary.address:
                    break
                page.keyboard.press("ArrowDown")
            expect(chosen).to_have_value(primary.address)
            focus_next(page, "#f-peer-address")
            page.keyboard.type(secondary.address)
            focus_next(page, "#f-peer-port")  # leaving the address asks for its certificate
            page.keyboard.press("Control+A")
            page.keyboard.type(str(MANAGEMENT_PORT))
            focus_next(page, "#f-password")
            page.keyboard.type(PEER_PASSWORD)
            # The person reads the fingerprint before going on: the box to tick comes with it.
            expect(page.locator("#peer-fingerprint")).to_have_text(printed)
            focus_next(page, "#f-fingerprint")
            page.keyboard.press("Space")
            expect(page.locator("#f-fingerprint")).to_be_checked()
            page.keyboard.press("Tab")
            expect(page.get_by_role("button", name="Add new node")).to_be_focused()
            began = time.monotonic()
            with page.expect_navigation(url="**/lbadmin/high-availability"):
                page.keyboard.press("Enter")
            expect(page.locator("#pair-steps")).to_contain_text("Attempting to pair…")
            paired = page.get_by_role("heading", name="High Availability Configuration - primary")
            expect(paired).to_be_visible(timeout=60_000)
            print(f"\n{engine}: paired through the page in {time.monotonic() - began:.1f} s")
            expect(page.locator("dd[data-node=primary]")).to_have_text(
                f"{primary.address} (this node)"
            )
            expect(page.locator("dd[data-node=secondary]")).to_have_text(secondary.address)
            browser.shoot(page, f"ha-pair-live-primary-{engine}")

            pair.settled()
            menu(page, "System Overview")  # it refreshes the status bar every 2 s
            expect(page.locator("#pair-status")).to_have_text(
                re.compile(BAR.format(role="Primary")), timeout=browser.SEEN_WITHIN
            )

            wait_for(
                "the Secondary running the Primary's revision",
                lambda: secondary.client.get("/status")["engine"]["revision"] == revision,
            )
            there = browser.open_page(launched, 1280, 900)
            sign_in(there, secondary, PASSWORD)  # the Primary's users, synced
            expect(there.locator("#pair-status")).to_have_text(
                re.compile(BAR.format(role="Secondary")), timeout=browser.SEEN_WITHIN
            )
            menu(there, "Layer 7 \N{EN DASH} Virtual Services")
            note = there.get_by_role("note")
            expect(note).to_contain_text("the cluster configuration is read-only here")
            expect(note.get_by_role("link")).to_have_attribute(
                "href", f"https://{primary.address}:{MANAGEMENT_PORT}/lbadmin/virtual-services"
            )
            browser.shoot(there, f"ha-pair-live-secondary-{engine}")
        assert not pair.client.signs_in(secondary, "loadbalancer", PEER_PASSWORD)
