"""The targets as a picture: for each, the built-in engine's ratio to HAProxy in every round,
their median, and the goal."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: a file only

import matplotlib.pyplot as plt

from bench.report import COLUMNS, Report, ratios, verdicts

MET, NOT_MET, UNMEASURED = "#2e7d32", "#c62828", "#9e9e9e"


LIMIT = 4.0  # ratios beyond are drawn at the edge, as a triangle


def draw(report: Report, path: Path) -> None:
    found = verdicts(report.metrics)
    figure, axes = plt.subplots(figsize=(9, 0.5 * len(found) + 1.6))
    right = 2.0
    for row, verdict in enumerate(reversed(found)):
        target = verdict.target
        metric = report.metrics.get(target.metric)
        per_round: list[float] = []
        if metric is not None:
            values = metric.values
            per_round = ratios(values.get("builtin", ()), values.get(target.versus, ()))
        colour = {True: MET, False: NOT_MET, None: UNMEASURED}[verdict.met]
        if verdict.ratio is not None:
            median = min(verdict.ratio.median, LIMIT)
            axes.barh(row, median, color=colour, alpha=0.35, height=0.6)
        inside = [r for r in per_round if r <= LIMIT]
        axes.scatter(inside, [row] * len(inside), color=colour, s=14, zorder=3)
        beyond = len(per_round) - len(inside)
        axes.scatter([LIMIT] * beyond, [row] * beyond, color=colour, marker=">", zorder=3)
        goal = target.at_least if target.at_least is not None else target.at_most
        assert goal is not None  # every target has one
        axes.plot([goal, goal], [row - 0.4, row + 0.4], color="black", linewidth=2)
        right = max(right, goal, *per_round)
    labels = [
        f"{v.target.text} ({v.target.condition()} {COLUMNS[v.target.versus]})"
        for v in reversed(found)
    ]
    axes.set_yticks(range(len(found)), labels, fontsize=8)
    axes.axvline(1.0, color="#555555", linewidth=0.8, linestyle=":")
    axes.set_xlabel("built-in ÷ HAProxy (bar: median of rounds; dots: each round; black: goal)")
    axes.set_xlim(0, min(right * 1.05, LIMIT * 1.02))
    axes.set_title("Built-in engine against HAProxy, issue 5's targets", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
