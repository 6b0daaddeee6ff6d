"""Drift of node settings as the operator sees it: the HA page's "Node settings compared",
``balancer ha status``'s drift part and GET /api/v1/ha's ``drift``, in process, with the pair's
view set by the test (tests/test_webui_ha.py's ``Shown`` Cluster). This node's facts are read
as the appliance reads them, through an ``ip`` on PATH that answers for the pair's address and
a kernel clock said synchronised; the peer's are this node's, changed where a test says."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from balancer.ha.drift import Facts, Offset
from balancer.pair import facts
from balancer.pair.status import PairView
from tests.ha.test_replication_view import command_line
from tests.test_webui_ha import PRIMARY, SECONDARY, PairWeb, page, pair_web, part, text

__all__ = ["page"]  # the browser fixture, from tests/test_webui_ha.py
HA = "/lbadmin/high-availability"
# `ip -j -batch -` for this node: the pair's address 198.18.0.1 on eth0, every route on-link.
IP = """#!/bin/sh
while read command what address; do
  case "$command $what" in
    "address show") echo '[{"ifname":"eth0","mtu":1500,"addr_info":[{"local":"198.18.0.1"}]}]';;
    "route get") echo "[{\\"dst\\":\\"$address\\",\\"dev\\":\\"eth0\\"}]";;
  esac
done
"""


@pytest.fixture
def web(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PairWeb]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ip").write_text(IP)
    (bin_dir / "ip").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setattr(facts, "kernel_clock", lambda: (0, 0x2001, 16_000))
    (tmp_path / "node").mkdir()
    with pair_web(tmp_path / "node", monkeypatch) as running:
        yield running


def mine(web: PairWeb) -> Facts:
    """This node's facts as the appliance reads them."""
    web.paired("primary", PairView(this=PRIMARY, peer=SECONDARY, link=0.4))
    gatherer = facts.Gatherer(web.store, web.cluster.controller)
    # A thread of its own: a browser's test has an event loop running in this one.
    with ThreadPoolExecutor(1) as aside:
        return aside.submit(lambda: asyncio.run(gatherer.gather())).result()


def peer_says(web: PairWeb, offset: Offset | None = None, **changed: Any) -> Facts:
    """The pair seen from the Primary, its peer's facts this node's renamed and ``changed``."""
    names = {"hostname": "lb2", "system_hostname": "lb2"}
    said = dataclasses.replace(mine(web), **{**names, **changed})
    peer = dataclasses.replace(SECONDARY, facts=said)
    web.paired("primary", PairView(this=PRIMARY, peer=peer, link=0.4))
    web.cluster.link = SimpleNamespace(offset=offset)  # type: ignore[assignment]
    return said


def rows(page: str) -> list[tuple[str, str, str, str, bool]]:
    """The table's rows: setting, this node, peer, compared, and whether marked."""
    table = part(page, '<table class="listing drift-rows">', "</table>")
    found = []
    for marked, row in re.findall(r'<tr( class="differs")?[^>]*>(.*?)</tr>', table, re.S)[1:]:
        cells = [text(cell) for cell in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.S)]
        found.append((cells[0], cells[1], cells[2], cells[3], bool(marked)))
    return found


def test_the_ha_page_marks_the_settings_the_nodes_differ_in(web: PairWeb) -> None:
    here = mine(web)
    peer_says(web, Offset(3.25, 0.002), mtu=9000, version="0.0.9", resolvers=("10.9.9.53",))
    page = web.client.get(HA).text
    assert '<h2 id="drift-title">Node settings compared</h2>' in page
    summary = text(part(page, '<p id="drift-summary">', "</p>"))
    assert summary.startswith("The nodes differ in 4 of 7 settings, marked below")
    marked = {row[0]: row[1:3] for row in rows(page) if row[4]}
    assert marked == {
        "DNS resolvers": (", ".join(here.resolvers or ()) or "none", "10.9.9.53"),
        "clock offset": ("this node's clock", "3.250 s ahead (± 0.002 s)"),
        "MTU": ("1500", "9000"),
        "Balancer version": (here.version, "0.0.9"),
    }
    agreeing = [row for row in rows(page) if not row[4]]
    assert [row[0] for row in agreeing] == ["hostname", "time synchronisation", "engine"]
    assert all(row[3] == "agrees" for row in agreeing)
    assert all(row[3] == "differs" for row in rows(page) if row[4])


def test_the_ha_page_says_when_the_nodes_agree(web: PairWeb) -> None:
    peer_says(web, Offset(0.01, 0.001))
    page = web.client.get(HA).text
    said = text(part(page, '<p id="drift-summary">', "</p>"))
    assert said == "The nodes agree on every setting Balancer can see."
    assert ('class="differs"' in page, len(rows(page))) == (False, 7)


def test_two_nodes_of_one_hostname_are_marked(web: PairWeb) -> None:
    here = mine(web)
    peer_says(web, hostname=here.hostname.upper(), system_hostname=here.system_hostname)
    marked = [row for row in rows(web.client.get(HA).text) if row[4]]
    assert marked == [("hostname", here.hostname, here.hostname.upper(), "differs", True)]


def test_a_peer_that_does_not_report_its_settings_is_not_compared(web: PairWeb) -> None:
    web.paired("primary", PairView(this=PRIMARY, peer=SECONDARY, link=0.4))
    page = web.client.get(HA).text
    said = text(part(page, '<p class="muted" id="drift-summary">', "</p>"))
    assert said == "Not compared: the peer's Balancer does not report its node settings."
    web.paired("primary", PairView(this=PRIMARY, peer=None, link=None))
    page = web.client.get(HA).text
    assert "Not compared: the peer has not been heard yet." in text(page)


def test_the_api_and_ha_status_show_the_drift(web: PairWeb, tmp_path: Path) -> None:
    peer_says(web, workers=9, mtu=1400)
    drift = web.local.get("/api/v1/ha").json()["drift"]
    assert drift["unseen"] is None
    assert [(r["setting"], r["this"], r["peer"]) for r in drift["rows"] if r["differs"]] == [
        ("MTU", "1500", "1400")
    ]  # workers are the built-in engine's: this fake engine has none to compare
    with command_line(web, tmp_path / "cli") as balancer:
        code, out, err = balancer("ha", "status")
        assert (code, err) == (0, "")
        said = out.splitlines()
        at = said.index("drift: the nodes differ in 1 of 6 settings")
        assert said[at + 1] == (
            "  MTU: this node 1500; peer 1400 (a smaller MTU on one node drops or fragments "
            "large packets after a failover)"
        )
        peer_says(web)
        code, out, _ = balancer("ha", "status")
        assert "drift: none, the nodes agree on every setting Balancer can see" in out.splitlines()


def test_the_compared_settings_have_no_serious_accessibility_violation(
    web: PairWeb, page: Any
) -> None:
    """axe-core (tests/test_webui_accessibility.py) on the HA page with settings that differ."""
    from tests.browser import playwright
    from tests.test_webui_accessibility import AXE, RUN_AXE, SERIOUS

    if not AXE.exists():
        pytest.skip("needs axe-core: `make test` installs it (npm ci --prefix tests/axe)")
    peer_says(web, Offset(3.25, 0.002), mtu=9000)
    page.goto(web.url + "high-availability")
    playwright.expect(page.locator("tr.differs")).to_have_count(2)
    page.add_script_tag(path=str(AXE))
    assert page.evaluate(RUN_AXE, list(SERIOUS)) == []
