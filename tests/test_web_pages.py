"""The WebUI's read-only pages in process, on the fake engine: View Configuration, Logs and
Reports show what the API gives, the overview shows the appliance's figures, and every page
has the heartbeat that tells it when the appliance cannot be reached."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from balancer.engines import EngineError
from balancer.state import Counters, EngineStatus
from tests.appliance import wait_for
from tests.webapp import WebApp, csrf_of, webapp

GUIDE_VIP = {"label": "CyberArk-PSM", "ip": "192.168.94.100", "ports": "3389"}
PSM1 = {"label": "PSM1", "ip": "192.168.94.105", "port": 3389}
PSM2 = {"label": "PSM2", "ip": "192.168.94.106", "port": 3389}
SIZE = r"\d+(?:\.\d)? [KMGTP]?i?B"
RATE_SEEN = r"\d+(?:\.\d)? [kMGT]?bit/s"
RATE = f"(?:{RATE_SEEN}|\N{EM DASH})"
PAGES = ("/lbadmin/", "/lbadmin/view-configuration", "/lbadmin/logs", "/lbadmin/reports")


@pytest.fixture
def app(tmp_path: Path) -> Iterator[WebApp]:
    with webapp(tmp_path) as running:
        running.sign_in()
        yield running


def csrf(app: WebApp) -> dict[str, str]:
    return {"X-CSRF-Token": csrf_of(app.network.get("/lbadmin/").text)}


def as_user(user: str) -> dict[str, str]:
    return {"X-Balancer-User": user}


def guide(app: WebApp) -> None:
    """VIP 1 and its two PSM servers, saved by alice and committed."""
    assert app.local.post(
        "/api/v1/virtual-services", json=GUIDE_VIP, headers=as_user("alice")
    ).is_success
    for server in (PSM1, PSM2):
        added = app.local.post(
            "/api/v1/virtual-services/CyberArk-PSM/real-servers",
            json=server,
            headers=as_user("alice"),
        )
        assert added.is_success, added.text
    assert app.local.post("/api/v1/commit", headers=as_user("alice")).is_success


def text(page: str) -> str:
    """A page's words, without its markup, as a reader sees them."""
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page)))


def section(page: str, id_: str) -> str:
    start = page.index(f'id="{id_}"')
    return page[start : page.index("</section>", start)]


# --- The Commit box -------------------------------------------------------------------------


def test_the_commit_box_lists_changes_in_the_guides_words(app: WebApp) -> None:
    assert app.local.post("/api/v1/virtual-services", json=GUIDE_VIP).is_success
    box = text(section(app.network.get("/lbadmin/").text, "commit-box"))
    assert "Revision 1 is saved. Nothing is running yet." in box
    assert "Add virtual service CyberArk-PSM at 192.168.94.100, port 3389" in box
    assert "none" not in box
    assert "virtual_services[" not in box

    for server in (PSM1, PSM2):
        added = app.local.post("/api/v1/virtual-services/CyberArk-PSM/real-servers", json=server)
        assert added.is_success, added.text
    assert app.local.post("/api/v1/commit").is_success
    changed = app.network.patch(
        "/api/v1/virtual-services/CyberArk-PSM/real-servers/PSM1",
        json={"weight": 50},
        headers=csrf(app),
    )
    assert changed.is_success, changed.text
    box = text(section(app.network.get("/lbadmin/").text, "commit-box"))
    assert "Revision 4 is saved; revision 3 runs." in box
    assert "Change Weight of real server PSM1 in CyberArk-PSM from 100 to 50" in box
    pending = app.local.get("/api/v1/changes").json()
    assert pending["changes"] == [
        "Change Weight of real server PSM1 in CyberArk-PSM from 100 to 50"
    ]
    assert pending["items"] == [
        {
            "path": "virtual_services[CyberArk-PSM].real_servers[PSM1].weight",
            "before": 100,
            "after": 50,
            "runtime": True,
        }
    ]


# --- View Configuration ---------------------------------------------------------------------


def test_view_configuration_shows_the_saved_revision_the_engines_and_the_revisions(
    app: WebApp,
) -> None:
    guide(app)
    page = app.network.get("/lbadmin/view-configuration")
    assert page.status_code == 200
    stored = text(section(page.text, "stored"))
    assert "As saved: revision 3 (the latest), running" in stored
    assert "by alice: add real server CyberArk-PSM/PSM2" in stored
    # Once, as an operator reads it: the guide's names, values as the forms show them.
    assert "Virtual service CyberArk-PSM IP Address 192.168.94.100 Ports 3389" in stored
    assert "Persistence Timeout 1800 " in stored
    assert "Health Checks Connect to Port" in stored
    assert "PSM2 192.168.94.106 3389 100 0 online" in stored
    assert "1800.0" not in page.text
    assert '"ip"' not in page.text
    assert 'id="running"' not in page.text  # nothing else runs
    assert 'id="engine"' not in page.text  # the built-in (here fake) engine runs it as shown
    revisions = text(section(page.text, "revisions"))
    for number, message in (
        (3, "add real server CyberArk-PSM/PSM2"),
        (2, "add real server CyberArk-PSM/PSM1"),
        (1, "add virtual service CyberArk-PSM"),
    ):
        assert re.search(rf"{number} \S+ \S+ UTC alice {re.escape(message)}", revisions), number
    assert "running" in revisions


def test_view_configuration_shows_the_running_revision_beside_saved_changes(app: WebApp) -> None:
    guide(app)
    changed = app.network.patch(
        "/api/v1/virtual-services/CyberArk-PSM/real-servers/PSM2",
        json={"weight": 50},
        headers=csrf(app),
    )
    assert changed.is_success, changed.text
    page = app.network.get("/lbadmin/view-configuration").text
    assert "As saved: revision 4 (the latest)" in text(section(page, "stored"))
    assert "PSM2 192.168.94.106 3389 50 0 online" in text(section(page, "stored"))
    running = text(section(page, "running"))
    assert "Running: revision 3" in running
    assert "Change Weight of real server PSM2 in CyberArk-PSM from 100 to 50" in running
    assert "by loadbalancer: modify real server CyberArk-PSM/PSM2" in text(section(page, "stored"))
    assert "saved, not committed" in text(section(page, "revisions"))

    older = app.network.get("/lbadmin/view-configuration?revision=1").text
    assert "As saved: revision 1 by" not in text(older)  # a revision's own words ...
    assert "As saved: revision 1 " in text(section(older, "stored"))
    assert "PSM1" not in section(older, "stored")  # ... and its own configuration


def test_view_configuration_names_a_bad_revision_and_an_unreachable_engine(app: WebApp) -> None:
    guide(app)
    for asked, reason in (
        ("x1", "revision: 'x1' is not a revision number"),
        ("99", "revision: there is no revision 99"),
    ):
        page = app.network.get(f"/lbadmin/view-configuration?revision={asked}")
        assert page.status_code == 422
        assert f"{reason}. The saved revision is shown instead." in text(page.text)

    async def refused() -> str:
        raise EngineError("engine socket refused")

    app.engine.configuration = refused  # type: ignore[method-assign]
    app.engine.name = "haproxy"  # only HAProxy's own form (haproxy.cfg) is shown beside
    page = app.network.get("/lbadmin/view-configuration")
    assert page.status_code == 200
    assert "The engine cannot be reached: engine socket refused." in text(page.text)
    assert "As saved: revision 3" in text(page.text)  # what is stored is still shown

    async def haproxy_cfg() -> str:
        return "frontend CyberArk-PSM\n    bind 192.168.94.100:3389"

    app.engine.configuration = haproxy_cfg  # type: ignore[method-assign]
    engine = text(section(app.network.get("/lbadmin/view-configuration").text, "engine"))
    assert (
        "As HAProxy runs it: haproxy.cfg frontend CyberArk-PSM bind 192.168.94.100:3389" in engine
    )


def test_view_configuration_before_anything_is_committed(app: WebApp) -> None:
    page = text(app.network.get("/lbadmin/view-configuration").text)
    assert "As saved: revision 0 (the latest)" in page
    assert "No revision has been committed yet" in page


# --- Logs -----------------------------------------------------------------------------------


def write_logs(folder: Path) -> None:
    folder.mkdir()
    engine = [
        {"time": 100.0, "source": "engine", "level": "info", "message": "engine started"},
        {
            "time": 300.0,
            "source": "engine",
            "level": "warning",
            "message": "health changed",
            "service": "CyberArk-PSM",
            "server": "PSM2",
            "reason": "expected PASS, got FAIL",
        },
    ]
    appliance = [
        {"time": 200.0, "source": "appliance", "level": "info", "message": "commit <revision 3>"},
    ]
    (folder / "engine.log").write_text("".join(json.dumps(e) + "\n" for e in engine))
    (folder / "balancer.log").write_text("".join(json.dumps(e) + "\n" for e in appliance))


def rows(page: str) -> list[str]:
    table = page[page.index('id="entries"') :]
    body = table[table.index("<tbody>") : table.index("</tbody>")]
    return [text(row).strip() for row in re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S)]


def test_logs_newest_first_with_their_fields(app: WebApp, tmp_path: Path) -> None:
    write_logs(tmp_path / "logs")
    page = app.network.get("/lbadmin/logs")
    assert page.status_code == 200
    assert rows(page.text) == [
        "1970-01-01 00:05:00 UTC engine warning health changed service=CyberArk-PSM server=PSM2 "
        "reason=expected PASS, got FAIL",
        "1970-01-01 00:03:20 UTC appliance info commit <revision 3>",
        "1970-01-01 00:01:40 UTC engine info engine started",
    ]
    assert "commit &lt;revision 3&gt;" in page.text  # a log line is text, never markup


def test_logs_filtered_by_log_and_text_as_the_api_filters_them(app: WebApp, tmp_path: Path) -> None:
    write_logs(tmp_path / "logs")
    for query, expected in (
        ("source=engine", ["health changed", "engine started"]),
        ("source=appliance", ["commit <revision 3>"]),
        ("text=psm2", ["health changed"]),  # any field, any case
        ("source=appliance&text=psm2", []),
        ("text=started", ["engine started"]),
    ):
        page = app.network.get(f"/lbadmin/logs?{query}").text
        api = app.network.get(f"/api/v1/logs?{query}").json()
        assert [e["message"] for e in api] == expected, query
        shown = rows(page)
        if expected:
            assert len(shown) == len(expected), query
            assert all(m in row for m, row in zip(expected, shown, strict=True)), query
        else:
            assert shown == ["Nothing in the logs matches."], query
    # The page keeps what was asked, for the next filter.
    page = app.network.get("/lbadmin/logs?source=engine&text=psm2").text
    assert '<option value="engine" selected>' in page
    assert 'name="text" value="psm2"' in page


def test_an_unknown_log_is_refused_naming_the_field(app: WebApp, tmp_path: Path) -> None:
    write_logs(tmp_path / "logs")
    page = app.network.get("/lbadmin/logs?source=kernel")
    assert page.status_code == 422
    assert "source: 'kernel' is not a log: engine or appliance" in text(page.text)
    api = app.network.get("/api/v1/logs?source=kernel")
    assert api.status_code == 422
    assert api.json()["detail"] == [
        {"field": "source", "reason": "'kernel' is not a log: engine or appliance"}
    ]


def test_the_audit_trail_filtered_by_user_and_text(app: WebApp) -> None:
    guide(app)
    app.store.audit(author="bob", action="drain", target="CyberArk-PSM/PSM1")
    everyone = rows(app.network.get("/lbadmin/logs?source=audit").text)
    assert everyone[0].split(" ", 3)[3] == "bob drain CyberArk-PSM/PSM1"  # newest first
    assert any(" alice commit " in row for row in everyone)

    alices = rows(app.network.get("/lbadmin/logs?source=audit&user=alice").text)
    assert alices
    assert all(row.split(" ")[3] == "alice" for row in alices)
    psm2 = rows(app.network.get("/lbadmin/logs?source=audit&user=alice&text=psm2").text)
    assert len(psm2) == 1
    assert "add CyberArk-PSM/PSM2" in psm2[0]
    api = app.network.get("/api/v1/audit", params={"author": "alice", "text": "PSM2"}).json()
    assert [(e["author"], e["target"]) for e in api] == [("alice", "CyberArk-PSM/PSM2")]
    nobody = rows(app.network.get("/lbadmin/logs?source=audit&user=carol").text)
    assert nobody == ["Nothing in the audit trail matches."]


# --- Reports --------------------------------------------------------------------------------


def with_counters(app: WebApp, counters: dict[str, Counters]) -> None:
    """The fake engine reports ``counters`` ("service" or "service/server") as its own."""
    reported = app.engine.status

    async def status() -> EngineStatus:
        found = await reported()
        return found.model_copy(
            update={
                "virtual_services": tuple(
                    vs.model_copy(
                        update={
                            "counters": counters.get(vs.label, Counters()),
                            "real_servers": tuple(
                                rs.model_copy(
                                    update={
                                        "counters": counters.get(
                                            f"{vs.label}/{rs.label}", Counters()
                                        )
                                    }
                                )
                                for rs in vs.real_servers
                            ),
                        }
                    )
                    for vs in found.virtual_services
                )
            }
        )

    app.engine.status = status  # type: ignore[method-assign]


def counters_of(page: str, row: str) -> dict[str, str]:
    start = page.index(row)
    cells = page[start : page.index("</tr>", start)]
    return dict(re.findall(r'data-counter="(\w+)"[^>]*>([^<]*)<', cells))


def test_reports_show_each_services_and_servers_traffic(app: WebApp) -> None:
    guide(app)
    with_counters(
        app,
        {
            "CyberArk-PSM": Counters(active=3, total=40, bytes_in=2048, bytes_out=5 * 2**20),
            "CyberArk-PSM/PSM1": Counters(active=1, total=10, bytes_in=512, bytes_out=2**20),
            "CyberArk-PSM/PSM2": Counters(active=2, total=30, bytes_in=1536, bytes_out=4 * 2**20),
        },
    )
    for path in ("/lbadmin/reports", "/lbadmin/reports/live"):
        page = app.network.get(path)
        assert page.status_code == 200
        assert counters_of(page.text, 'data-service="CyberArk-PSM"') == {
            "active": "3",
            "total": "40",
            "bytes_in": "2.0 KiB",
            "bytes_out": "5.0 MiB",
        }
        assert counters_of(page.text, 'data-server="CyberArk-PSM/PSM2"') == {
            "active": "2",
            "total": "30",
            "bytes_in": "1.5 KiB",
            "bytes_out": "4.0 MiB",
        }
        psm1 = page.text[page.text.index('data-server="CyberArk-PSM/PSM1"') :]
        assert 'title="512 bytes"' in psm1
        assert "25%" in psm1[: psm1.index("</tr>")]
    live = app.network.get("/lbadmin/reports").text
    assert 'hx-get="/lbadmin/reports/live" hx-trigger="every 2s"' in live


def test_reports_say_when_the_engine_cannot_be_reached(app: WebApp) -> None:
    app.engine.unreachable = "engine socket refused"
    page = app.network.get("/lbadmin/reports/live")
    assert page.status_code == 200
    assert "The engine cannot be reached: engine socket refused." in text(page.text)


# --- System Overview's figures and the heartbeat ----------------------------------------------


def figure(page: str, name: str) -> str:
    start = page.index(f'data-figure="{name}"')
    return text(page[start : page.index("</div>", start)])


def test_the_overview_shows_bandwidth_load_and_memory(app: WebApp) -> None:
    for path in ("/lbadmin/", "/lbadmin/overview/live"):
        page = app.network.get(path).text
        bandwidth = figure(page, "bandwidth")
        # A first read has totals but no rate yet.
        assert re.search(rf"lo {RATE} {RATE} {SIZE} {SIZE}", bandwidth), bandwidth
        load = figure(page, "load")
        assert re.search(r"1m average \d+\.\d\d 5m average \d+\.\d\d 15m average \d+\.\d\d", load)
        memory = figure(page, "memory")
        assert re.search(rf"Used {SIZE} of {SIZE} \(\d+%\) Available {SIZE}", memory), memory
    # A later read, a second or more after, is a rate.
    rated = rf"lo {RATE_SEEN} {RATE_SEEN} {SIZE} {SIZE}"

    def live_bandwidth() -> str:
        return figure(app.network.get("/lbadmin/overview/live").text, "bandwidth")

    wait_for("a rate", lambda: re.search(rated, live_bandwidth()))


def test_the_api_gives_the_same_figures(app: WebApp) -> None:
    first = app.network.get("/api/v1/system")
    assert first.status_code == 200
    figures: dict[str, Any] = first.json()
    assert figures["problems"] == []
    assert {"one", "five", "fifteen", "cpus"} <= set(figures["load"])
    assert 0 < figures["memory"]["available"] <= figures["memory"]["total"]
    lo = next(nic for nic in figures["interfaces"] if nic["name"] == "lo")
    assert lo["rx_bytes"] > 0
    assert app.local.get("/api/v1/system").status_code == 200


def test_every_page_has_the_heartbeat_and_it_is_not_use(app: WebApp) -> None:
    for path in PAGES:
        page = app.network.get(path)
        assert page.status_code == 200, path
        assert 'id="heartbeat"' in page.text, path
        assert 'hx-get="/lbadmin/heartbeat"' in page.text, path
        assert 'id="unreachable"' in page.text, path
    beat = app.network.get(
        "/lbadmin/heartbeat", headers={"X-Balancer-Poll": "1", "HX-Request": "1"}
    )
    assert beat.status_code == 204
    signed_out = app.network.post("/lbadmin/sign-out", headers=csrf(app))
    assert signed_out.status_code in (200, 303)
    ended = app.network.get("/lbadmin/heartbeat", headers={"HX-Request": "1"})
    assert (ended.status_code, ended.headers["hx-redirect"]) == (401, "/lbadmin/sign-in")


# --- Pages that are not there ---------------------------------------------------------------


def test_an_unknown_page_is_a_page_with_the_menu_for_a_signed_in_user(app: WebApp) -> None:
    page = app.network.get("/lbadmin/foo")
    assert page.status_code == 404
    assert page.headers["content-type"].startswith("text/html")
    assert "There is no page at /lbadmin/foo." in text(page.text)
    assert 'href="/lbadmin/view-configuration"' in page.text  # the menu
    # The API keeps its JSON, and a signed-out visitor learns nothing but the way to sign in.
    api = app.network.get("/api/v1/nothing-here")
    assert api.status_code == 404
    assert api.json()["detail"][0]["reason"] == "Not Found"
    app.network.cookies.clear()
    signed_out = app.network.get("/lbadmin/foo", follow_redirects=False)
    assert signed_out.status_code == 303
    assert signed_out.headers["location"].startswith("/lbadmin/sign-in")


def test_a_wrong_method_and_a_failure_are_pages_too(app: WebApp) -> None:
    wrong = app.network.post("/lbadmin/view-configuration", headers=csrf(app))
    assert wrong.status_code == 405
    assert "The page /lbadmin/view-configuration does not take a POST request." in text(wrong.text)
    assert 'href="/lbadmin/logs"' in wrong.text

    async def broken() -> str:
        raise RuntimeError("a fault")

    app.engine.configuration = broken  # type: ignore[method-assign]
    app.engine.name = "haproxy"  # View Configuration then asks the engine for haproxy.cfg
    app.network._transport.raise_server_exceptions = False  # type: ignore[attr-defined]
    failed = app.network.get("/lbadmin/view-configuration")
    assert failed.status_code == 500
    assert "could not be shown: the appliance met an error it did not expect" in text(failed.text)
    assert "a fault" not in failed.text  # no traceback, no internal words
