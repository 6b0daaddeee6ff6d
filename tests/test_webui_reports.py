"""Reports' history as an operator reads it: in process, a history the test writes (its own
sample times) drawn as graphs with the guide's Min / Avg / Max / Total, the very figures the
history API gives, and the same beside System Overview's figures; then in Debian's chromium at
768 px, the range chosen by keyboard."""

from __future__ import annotations

import math
import re
import time
from pathlib import Path
from typing import Any

from balancer.history import FILE, History, Point
from balancer.history.store import Change
from balancer.web.graphs import LEFT, RIGHT, WIDTH, moment_label
from balancer.web.reports import during, field_time
from balancer.web.units import bitrate, size
from tests.appliance import Appliance, appliance
from tests.browser import (
    SCREENSHOTS,
    chromium,
    needs_chromium,
    open_page,
    playwright,
    shoot,
    sign_in,
)
from tests.test_webui_accessibility import AXE, RUN_AXE, SERIOUS
from tests.test_webui_keyboard import tab_to
from tests.webapp import webapp

LOADS = (1.0, 2.0, 6.0)
RX = (125.0, 250.0, 1250.0)  # bytes per second: 1, 2 and 10 kbit/s
DOWN = 1  # PSM2 is down in the middle sample


def fill(data_dir: Path, now: int) -> None:
    """Three samples 10 s apart, ending at ``now``; PSM2 went down 5 s before the middle one
    (connect refused) and came back 5 s after it."""
    with History(data_dir / FILE) as history:
        for index, (load, rx) in enumerate(zip(LOADS, RX, strict=True)):
            t = now - 20 + 10 * index
            history.write(
                t,
                [
                    Point("node/load", load),
                    Point("node/load5", load / 2),
                    Point("node/load15", load / 4),
                    Point("server/CyberArk-PSM/PSM1/check_seconds", 0.002 * (index + 1)),
                    Point("interface/test0/rx_bytes", rx, 10 * rx),
                    Point("interface/test0/tx_bytes", 0.0, 0.0),
                    Point("service/CyberArk-PSM/connections", 3.0),
                    Point("server/CyberArk-PSM/PSM1/connections", 2.0),
                    Point("server/CyberArk-PSM/PSM2/connections", 1.0),
                    Point("server/CyberArk-PSM/PSM1/new_connections", 0.3, 3.0),
                    Point("server/CyberArk-PSM/PSM2/new_connections", 0.1, 1.0),
                    Point("server/CyberArk-PSM/PSM1/health", 1.0),
                    Point("server/CyberArk-PSM/PSM2/health", 0.0 if index == DOWN else 1.0),
                ],
                [
                    Change(t - 5, "CyberArk-PSM/PSM2", "down", "connect refused"),
                    Change(t + 5, "CyberArk-PSM/PSM2", "up", "connected"),
                ]
                if index == DOWN
                else [],
            )


def fill_hour(data_dir: Path, now: int) -> None:
    """An hour of samples that vary, PSM2 down for ten minutes of it: for the README's picture."""
    with History(data_dir / FILE) as history:
        for index in range(360):
            wave = 1 + math.sin(index / 30)
            history.write(
                now - 3600 + 10 * index,
                [
                    Point("node/load", 0.4 * wave),
                    Point("node/load5", 0.3 + 0.1 * wave),
                    Point("node/load15", 0.35),
                    Point("server/CyberArk-PSM/PSM1/check_seconds", 0.002 + 0.001 * wave),
                    Point(
                        "server/CyberArk-PSM/PSM2/check_seconds",
                        0.0001 if 200 <= index < 260 else 0.003 * wave,
                    ),
                    Point("interface/lab0/rx_bytes", 40_000 * wave, 400_000 * wave),
                    Point("interface/lab0/tx_bytes", 90_000 * wave, 900_000 * wave),
                    Point("service/CyberArk-PSM/connections", round(12 * wave)),
                    Point("server/CyberArk-PSM/PSM1/connections", round(6 * wave)),
                    Point(
                        "server/CyberArk-PSM/PSM2/connections",
                        round(6 * wave) if index < 200 else 0,
                    ),
                    Point("server/CyberArk-PSM/PSM1/new_connections", 0.1, 1.0),
                    Point(
                        "server/CyberArk-PSM/PSM2/new_connections", 0.1, 1.0 if index < 200 else 0.0
                    ),
                    Point("server/CyberArk-PSM/PSM1/health", 1.0),
                    Point("server/CyberArk-PSM/PSM2/health", 0.0 if 200 <= index < 260 else 1.0),
                ],
                {
                    200: [Change(now - 1600, "CyberArk-PSM/PSM2", "down", "connect refused")],
                    260: [Change(now - 1000, "CyberArk-PSM/PSM2", "up", "connected")],
                }.get(index, []),
            )


def cells(page: str, row: str) -> list[str]:
    found = re.search(rf'<th scope="row">{row}</th>(.*?)</tr>', page, re.S)
    assert found, f"no row {row}"
    return re.findall(r'<td class="number"[^>]*>([^<]*)</td>', found.group(1))


def test_reports_draw_the_history_with_the_apis_own_figures(tmp_path: Path) -> None:
    now = int(time.time())
    fill(tmp_path, now)
    with webapp(tmp_path) as app:
        app.sign_in()
        page = app.network.get("/lbadmin/reports").text
        health = app.local.get(
            "/api/v1/metrics/history", params={"series": "server/CyberArk-PSM/PSM2/health"}
        ).json()["series"]["server/CyberArk-PSM/PSM2/health"]
        api = app.local.get(
            "/api/v1/metrics/history", params={"series": "node/load,interface/test0/rx_bytes"}
        ).json()["series"]
        overview = app.network.get("/lbadmin/").text
        day = app.network.get("/lbadmin/reports", params={"range": "day"}).text
        odd = app.network.get("/lbadmin/reports", params={"range": "decade"}).text
    # One graph per interface, the load, and per virtual service its connections, health and
    # health-check latency.
    assert page.count('<svg class="graph"') == 5
    assert page.count("<title id=") == 5
    assert "no data yet" not in page
    # The known series' figures, in the operator's units, as the API computes them.
    assert cells(page, "1m average") == ["1.00", "3.00", "6.00"]
    assert cells(page, "5m average") == ["0.50", "1.50", "3.00"]
    assert cells(page, "15m average") == ["0.25", "0.75", "1.50"]
    load = api["node/load"]
    assert [load["min"], load["avg"], load["max"]] == [1.0, 3.0, 6.0]
    rx = api["interface/test0/rx_bytes"]
    assert cells(page, "RX") == [
        bitrate(rx["min"]), bitrate(rx["avg"]), bitrate(rx["max"]), size(rx["total"])
    ]  # fmt: skip
    assert cells(page, "RX") == ["1.0 kbit/s", "4.3 kbit/s", "10.0 kbit/s", "15.9 KiB"]
    # Each real server's share of the new connections; PSM2's down period said in words.
    assert re.search(r'data-server="CyberArk-PSM/PSM1">PSM1 <meter[^>]*>75%</meter> 75%', page)
    assert page.count('<g class="down" data-server="PSM2">') == 1
    assert 'data-server="PSM1"><title>' not in page
    # And why, in the box's title and in a line under the timeline.
    start = now - 3600
    since, until = (moment_label(t, start, now) for t in (now - 10, now))
    assert f"<title>PSM2 down from {since} to {until}: connect refused</title>" in page
    down = re.findall(r'<li data-server="CyberArk-PSM/PSM2">([^<]*)</li>', page)
    assert down == [f"PSM2 down {since}-{until}: connect refused"]
    # The latency of each check in milliseconds (2 to 6 ms: an axis to 10): PSM1's, the only
    # one the engine gave.
    latency = re.search(r'data-graph="latency/CyberArk-PSM">(.*?)</figure>', page, re.S)
    assert latency is not None
    assert re.findall(r'text-anchor="end">([^<]*)</text>', latency.group(1))[:3] == ["0", "5", "10"]
    assert re.findall(r'<polyline[^>]*data-line="([^"]*)"', latency.group(1)) == ["PSM1"]
    # The range chooser: the hour chosen; an unknown range is the hour.
    assert '<a href="?range=hour" aria-current="page">Last hour</a>' in page
    assert '<a href="?range=day" aria-current="page">Last day</a>' in day
    assert 'class="zoom" href="?range=hour"' in day  # clicking a day's graph shows the hour
    assert 'class="zoom"' not in page  # nothing finer than the hour
    assert '<a href="?range=hour" aria-current="page">' in odd
    # The API says the same changes, with their reasons.
    assert health["changes"] == [
        [now - 15, "down", "connect refused"],
        [now - 5, "up", "connected"],
    ]
    # System Overview: the same figures over the hour, beside its own.
    assert cells(overview, "test0 RX") == ["1.0 kbit/s", "4.3 kbit/s", "10.0 kbit/s", "15.9 KiB"]
    assert "1m average over the last hour: 1.00 Min, 3.00 Avg, 6.00 Max" in overview
    assert "5m average over the last hour: 0.50 Min, 1.50 Avg, 3.00 Max" in overview
    assert "15m average over the last hour: 0.25 Min, 0.75 Avg, 1.50 Max" in overview


def test_a_span_from_to_draws_that_time_and_a_wrong_one_is_said_at_its_field(
    tmp_path: Path,
) -> None:
    now = int(time.time())
    fill(tmp_path, now)
    since, until = now // 60 * 60 - 60, now // 60 * 60 + 60
    with webapp(tmp_path) as app:
        app.sign_in()
        page = app.network.get(
            "/lbadmin/reports", params={"from": field_time(since), "to": field_time(until)}
        ).text
        api = app.local.get(
            "/api/v1/metrics/history",
            params={"series": "node/load", "start": since, "end": until},
        ).json()
        wrong = app.network.get("/lbadmin/reports", params={"from": "yesterday", "to": ""}).text
        short = app.network.get(
            "/lbadmin/reports", params={"from": field_time(since), "to": field_time(since)}
        ).text
        refused = app.local.get("/api/v1/metrics/history", params={"start": until, "end": since})
    assert f"History: {during((since, until))}" in page
    assert page.count(f'data-start="{since}" data-end="{until}"') == 5
    assert 'aria-current="page"' not in page.split('aria-label="Range of the graphs"')[1][:400]
    assert 'class="zoom"' not in page  # a span has no finer range to click to
    assert cells(page, "1m average") == ["1.00", "3.00", "6.00"]
    assert f'value="{field_time(since)}"' in page
    assert (api["range"], api["start"], api["end"]) == (None, since, until)
    assert [p[2] for p in api["series"]["node/load"]["points"]] == list(LOADS)
    # A wrong span is one line at its field, what was typed kept, and the last hour shown.
    assert "From: &#39;yesterday&#39; is not a time like 2026-12-04T02:10 (UTC)" in wrong
    assert 'value="yesterday"' in wrong
    assert "History: the last hour" in wrong
    assert "To: must be at least a minute after From" in short
    assert refused.status_code == 422


def test_before_any_history_each_graph_says_no_data_yet(tmp_path: Path) -> None:
    with webapp(tmp_path) as app:
        app.sign_in()
        page = app.network.get("/lbadmin/reports").text
        overview = app.network.get("/lbadmin/").text
    assert page.count('<svg class="graph"') == 1  # the load: there is always a node
    assert "no data yet" in page
    assert cells(page, "1m average") == ["no data yet"] * 3
    assert 'data-figures="bandwidth"' not in overview


@needs_chromium
def test_reports_at_768_px_with_graphs_and_the_range_chosen_by_keyboard(tmp_path: Path) -> None:
    with appliance(tmp_path) as box:
        # Written while the daemon is stopped: its history is its own file, one writer at a time.
        box.stop()
        fill_hour(box.data_dir, int(time.time()))
        box.start()
        with chromium() as browser:
            page = open_page(browser, 768, 1024, bypass_csp=True)
            sign_in(page, box)
            page.goto(f"{box.webui}reports")
            graph = page.locator('figure[data-graph="load"] svg')
            playwright.expect(graph).to_be_visible()
            # Drawn at the page's width, not cut off or scrolled sideways.
            box_of = graph.bounding_box()
            assert 300 < box_of["width"] <= 768
            assert page.evaluate("document.documentElement.scrollWidth") <= 768
            # The daemon's own interfaces may have graphs of their own beside these.
            for drawn in ("bandwidth/lab0", "service/CyberArk-PSM", "health/CyberArk-PSM"):
                playwright.expect(page.locator(f'figure[data-graph="{drawn}"] svg')).to_be_visible()
            shoot(page, "reports-history-768")
            # The accessibility test sees Reports before any history; here with its graphs.
            if AXE.exists():
                page.add_script_tag(path=str(AXE))
                assert page.evaluate(RUN_AXE, list(SERIOUS)) == []
            tab_to(page, "Last week")
            page.keyboard.press("Enter")
            page.wait_for_url("**/reports?range=week")
            playwright.expect(
                page.get_by_role("heading", name="History: the last week")
            ).to_be_visible()
            playwright.expect(
                page.locator('a[aria-current="page"]', has_text="Last week")
            ).to_be_visible()
            page.context.close()
            drag_to_zoom(browser, box)


def drag_to_zoom(browser: Any, box: Appliance) -> None:
    """The load graph of the last hour dragged across from a quarter to three quarters of its
    time, with the mouse, the Content-Security-Policy enforced: the page of that half hour."""
    page = open_page(browser, 768, 1024)
    sign_in(page, box)
    page.goto(f"{box.webui}reports")
    graph = page.locator('figure[data-graph="load"] svg')
    playwright.expect(graph).to_be_visible()
    start, end = int(graph.get_attribute("data-start")), int(graph.get_attribute("data-end"))
    graph.scroll_into_view_if_needed()  # the mouse reaches what is on the screen
    at = graph.bounding_box()
    scale = at["width"] / WIDTH

    def x(fraction: float) -> float:
        return at["x"] + scale * (LEFT + fraction * (RIGHT - LEFT))

    y = at["y"] + at["height"] / 2
    page.mouse.move(x(0.25), y)
    page.mouse.down()
    page.mouse.move(x(0.5), y, steps=4)
    playwright.expect(graph.locator("rect.zoom-band")).to_be_visible()  # the span, as dragged
    page.mouse.move(x(0.75), y, steps=4)
    page.mouse.up()
    page.wait_for_url("**/reports?from=*")
    playwright.expect(
        page.get_by_role("heading", name=re.compile(r"^History: .+ to "))
    ).to_be_visible()
    zoomed = page.locator('figure[data-graph="load"] svg')
    since, until = int(zoomed.get_attribute("data-start")), int(zoomed.get_attribute("data-end"))
    # The times dragged across, a quarter and three quarters of the hour, widened to the minute
    # (a pixel is some 6 s of the hour).
    quarter, three_quarters = start + (end - start) // 4, start + 3 * (end - start) // 4
    assert quarter - 75 <= since <= quarter + 15
    assert three_quarters - 15 <= until <= three_quarters + 75
    # PSM2's down period is in it, and why; the form holds the span, to change by keyboard.
    playwright.expect(page.locator("ul.downtimes li")).to_have_text(
        re.compile(r"^PSM2 down \d\d:\d\d-\d\d:\d\d: connect refused$")
    )
    playwright.expect(page.locator("#span-from")).to_have_value(field_time(since))
    shoot(page, "reports-zoomed")
    # The README's docs/images/reports-history.png: a zoomed half hour holds none of the samples
    # the appliance itself took since its start (its own interfaces, this machine's load).
    page.locator("section.history").screenshot(path=str(SCREENSHOTS / "reports-history.png"))
    page.context.close()


def test_a_history_that_cannot_be_read_is_one_line(tmp_path: Path) -> None:
    (tmp_path / FILE).write_bytes(b"not a database, " * 512)
    with webapp(tmp_path) as app:
        app.sign_in()
        page = app.network.get("/lbadmin/reports")
        overview = app.network.get("/lbadmin/")
    assert page.status_code == 200
    said = re.findall(r'<p class="banner error" role="alert">([^<]*)</p>', page.text)
    assert said == ["history: cannot be read: file is not a database"]
    assert 'data-graph="load"' not in page.text
    assert overview.status_code == 200
    assert 'data-figures="load"' not in overview.text
