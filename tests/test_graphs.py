"""The Reports graphs' drawing (balancer.web.graphs), pure: points placed where they belong,
gaps left blank, down periods marked in words, the figures written from the history's own, and
"no data yet" where there is nothing to draw."""

from __future__ import annotations

import re

from balancer.history.query import Series
from balancer.history.store import Change, Stored
from balancer.web.graphs import (
    BOTTOM,
    LEFT,
    MOST,
    NO_DATA,
    RIGHT,
    TOP,
    Downtime,
    Line,
    ceiling,
    down_periods,
    downtimes,
    figures,
    line_graph,
    load,
    thinned,
    timeline,
)
from balancer.web.units import bitrate

START, END = 1_000_000, 1_000_000 + 3600


def placed(svg: str, label: str) -> list[list[tuple[float, float]]]:
    """Each polyline's points of the line named ``label``."""
    return [
        [(float(x), float(y)) for x, y in (pair.split(",") for pair in points.split())]
        for points in re.findall(rf'<polyline points="([^"]+)"[^>]*data-line="{label}"', svg)
    ]


def test_points_are_placed_by_time_and_value_on_a_round_axis() -> None:
    lines = [Line("load", [(START, 0.0), (START + 1800, 0.4), (END, 0.8)])]
    svg = line_graph("Load", "1 min load", lines, start=START, end=END, step=1800, unit="load",
                     shown=load)  # fmt: skip
    # The axis' top is 1 (0.8 rounded up): 0.4 is 40 % up the plot, half way across.
    middle_y = BOTTOM - 0.4 * (BOTTOM - TOP)
    assert placed(svg, "load") == [
        [
            (LEFT, BOTTOM),
            ((LEFT + RIGHT) / 2, round(middle_y, 1)),
            (RIGHT, BOTTOM - 0.8 * (BOTTOM - TOP)),
        ]
    ]
    assert ">1.00</text>" in svg
    assert ">0.00</text>" in svg
    assert '<title id="g-load-t">Load</title>' in svg
    assert "<desc" in svg
    assert 'viewBox="0 0 768 250" width="100%"' in svg
    assert NO_DATA not in svg


def test_a_gap_in_the_samples_is_left_blank_and_lines_differ_by_dash() -> None:
    rx = Line("eth0 in", [(START, 1.0), (START + 10, 2.0), (START + 600, 3.0), (START + 610, 1.0)])
    tx = Line("eth0 out", [(START, 1.0), (START + 10, 1.0)])
    svg = line_graph("Bandwidth", "d", [rx, tx], start=START, end=END, step=10,
                     unit="bit/s", shown=bitrate)  # fmt: skip
    assert len(placed(svg, "eth0 in")) == 2  # two runs: not bridged over the missed samples
    assert 'stroke-dasharray="8 4" data-line="eth0 out"' in svg
    assert ">eth0 in</text>" in svg
    assert ">eth0 out</text>" in svg


def test_an_empty_graph_says_no_data_yet() -> None:
    svg = line_graph("Load", "d", [Line("load", [])], start=START, end=END, step=10,
                     unit="load", shown=load)  # fmt: skip
    assert NO_DATA in svg
    assert "<polyline" not in svg
    assert NO_DATA in timeline("Health", "d", [], start=START, end=END, step=10)


def test_ceiling_is_one_two_or_five_times_a_power_of_ten() -> None:
    assert [ceiling(v) for v in (0, 0.8, 1, 1.2, 3, 7, 4100)] == [1, 1, 1, 2, 5, 10, 5000]


def test_down_periods_are_merged_and_marked_in_words() -> None:
    points = [(START + 10 * i, 0.0 if 3 <= i <= 5 else 1.0) for i in range(10)]
    assert down_periods(points, 10) == [(START + 30, START + 60)]
    svg = timeline("Health", "d", [Line("PSM2", points)], start=START, end=START + 100, step=10)
    assert svg.count('<g class="down"') == 1
    assert re.search(r"<title>PSM2 down from \d\d:\d\d to \d\d:\d\d</title>", svg)
    assert ">down</text>" in svg


def test_a_down_period_says_why_from_the_changes_kept() -> None:
    # Down from the 3rd to the 5th point and from the 8th; 10 s points.
    points = [(START + 10 * i, 0.0 if 3 <= i <= 5 or i == 8 else 1.0) for i in range(10)]
    row = Line("PSM2", points)
    said = [
        Change(START - 500, "PSM/PSM2", "down", "connect refused"),  # long before: recovered
        Change(START - 400, "PSM/PSM2", "up", "connected"),
        Change(START + 28, "PSM/PSM2", "down", "connect refused"),  # as the 3rd point began
        Change(START + 45, "PSM/PSM2", "down", "connect timeout after 5s"),
        Change(START + 58, "PSM/PSM2", "up", "connected"),
    ]
    assert downtimes(row, said, 10) == [
        Downtime("PSM2", START + 30, START + 60, "connect refused, then connect timeout after 5s"),
        Downtime("PSM2", START + 80, START + 90, ""),  # no change kept for it: no reason made up
    ]
    svg = timeline("Health", "d", [row], start=START, end=START + 100, step=10, why={"PSM2": said})
    titles = re.findall(r"<title>(PSM2 down [^<]*)</title>", svg)
    assert titles[0].endswith(": connect refused, then connect timeout after 5s")
    assert re.fullmatch(r"PSM2 down from \d\d:\d\d to \d\d:\d\d", titles[1])
    # Its span and plot area, for the drag to zoom.
    assert f'data-start="{START}" data-end="{START + 100}" data-left="{LEFT}"' in svg


def test_figures_are_the_historys_own_written_in_the_operators_units() -> None:
    points = [Stored(START, 1.0, 1.0, 1.0, 10.0)]
    rx = Series(counter=True, min=125.0, avg=1250.0, max=125_000.0, total=2048.0, points=points)
    shown = figures(rx, bitrate)
    assert (shown.min, shown.avg, shown.max, shown.total) == (
        "1.0 kbit/s", "10.0 kbit/s", "1.0 Mbit/s", "2.0 KiB",
    )  # fmt: skip
    gauge = Series(counter=False, min=0.0, avg=0.08, max=0.68, total=None, points=points)
    assert figures(gauge, load) == figures(gauge, load)
    assert (figures(gauge, load).avg, figures(gauge, load).total) == ("0.08", "\N{EM DASH}")
    assert figures(None, load).min == NO_DATA


def test_a_day_of_points_is_thinned_to_the_graphs_width_by_means() -> None:
    day = [(START + 10 * i, float(i % 2)) for i in range(8640)]
    points, step = thinned(day, 10)
    assert len(points) <= MOST
    assert step % 10 == 0
    assert all(0.4 < v < 0.6 for _, v in points)  # each the mean of its run of 0s and 1s
    assert thinned(day[:3], 10) == (day[:3], 10)


def test_a_long_legend_wraps_within_the_width() -> None:
    lines = [Line(f"PSM{n}", [(START, 1.0)]) for n in range(10)]
    svg = line_graph("Connections", "d", lines, start=START, end=END, step=10,
                     unit="connections", shown=str)  # fmt: skip
    assert 'viewBox="0 0 768 286"' in svg  # two more rows of names
    legend_x = [float(x) for x in re.findall(r'<text x="([\d.]+)" y="[\d.]+">PSM\d</text>', svg)]
    assert len(legend_x) == 10
    assert max(legend_x) < 768 - 60
