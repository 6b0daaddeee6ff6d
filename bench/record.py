"""The numbers of a bench run as it goes: one value per round for each metric and proxy, how
busy the proxy was and how busy each core, and what each metric is called. Pure."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bench.report import Metric, Table

MB_S, CONN_S, US = "MB/s", "conn/s", "µs"
PROXY_CORE, LOAD_CORE = "proxy's core", "generator's core"
BETTER_HIGH = {"bulk", "connect"}


def _title(key: str) -> tuple[str, str]:
    """A metric's title and unit, from its key."""
    base, _, variant = key.partition("__")
    suffix = {"": "", "nopersist": ", persistence off", "2cores": ""}[variant]
    kind, _, size = base.rpartition("_")
    if kind == "bulk":
        return f"bulk, {size} stream{'s' if size != '1' else ''}{suffix}", MB_S
    if kind == "connect" and variant == "2cores":
        return f"new connections, {size} at once, 2 workers / nbthread 2", CONN_S
    if kind == "connect":
        return f"new connections, {size} at once{suffix}", CONN_S
    if kind == "cpuconn":
        two = ", 2 workers / nbthread 2" if variant == "2cores" else ""
        return f"the proxy's CPU per new connection, {size} at once{suffix}{two}", US
    if base == "serial":
        return f"one connection at a time{suffix}", US
    if base in ("p50_serial", "p99_serial"):
        return f"latency one at a time, {base[:3]}{suffix}", US
    if base in ("added_p50", "added_p99"):
        return f"added latency one at a time (minus direct), {base[-3:]}{suffix}", US
    if base == "idle_memory":
        return "memory per idle connection", "KiB"
    if base == "idle_cpu":
        return "CPU per message, idle connections", US
    raise ValueError(f"no title for metric {key!r}")


ORDER = ("bulk", "connect", "cpuconn", "p50_serial", "p99_serial", "added_p50", "added_p99", "idle")


def _rank(key: str) -> tuple[str, int, int]:
    """Rows in the order of issue 5, each scenario's variants after it."""
    base, _, variant = key.partition("__")
    first = next(i for i, prefix in enumerate(ORDER) if base.startswith(prefix))
    size = base.rpartition("_")[2]
    return variant, first, int(size) if size.isdigit() else 0


@dataclass
class Recorder:
    rounds: int
    values: dict[str, dict[str, list[float | None]]] = field(default_factory=dict)
    busy: dict[str, dict[str, list[float | None]]] = field(default_factory=dict)
    # Scenario -> how busy the proxy's core and the generator's core were, whatever ran.
    cores: dict[str, dict[str, list[float | None]]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)

    def put(
        self,
        table: dict[str, dict[str, list[float | None]]],
        key: str,
        column: str,
        round_: int,
        value: float | None,
    ) -> None:
        """Round ``round_`` of ``column`` in row ``key`` of ``table`` (one of the three)."""
        row = table.setdefault(key, {})
        row.setdefault(column, [None] * self.rounds)[round_] = value

    def metrics(self, notes: dict[str, str]) -> dict[str, Metric]:
        self._added()
        found: dict[str, Metric] = {}
        for key, values in sorted(self.values.items(), key=lambda item: _rank(item[0])):
            title, unit = _title(key)
            better = key.partition("_")[0] in BETTER_HIGH
            table: Table = "scaling" if key.endswith("__2cores") else "results"
            found[key] = Metric(key, title, unit, better, values, table, notes.get(key, ""))
        for key, values in self.busy.items():
            title, _ = _title(key)
            found[f"cpu__{key}"] = Metric(f"cpu__{key}", title, "% of a core", False, values, "cpu")
        scenarios = list(dict.fromkeys(key.rpartition("|")[0] for key in self.cores))

        def proxy_first(key: str) -> tuple[int, bool]:
            scenario, _, core = key.rpartition("|")
            return scenarios.index(scenario), core != PROXY_CORE

        for key, values in sorted(self.cores.items(), key=lambda item: proxy_first(item[0])):
            scenario, _, core = key.rpartition("|")
            title = f"{_title(scenario)[0]}: {core}"
            found[f"core__{key}"] = Metric(f"core__{key}", title, "% busy", False, values, "cores")
        return found

    def _added(self) -> None:
        """Added latency, round by round: a proxy's less the direct one of the same round."""
        for key in list(self.values):
            base, sep, variant = key.partition("__")
            if base not in ("p50_serial", "p99_serial"):
                continue
            measured = self.values[key]
            direct = measured.get("direct", [None] * self.rounds)
            for column, values in measured.items():
                if column == "direct":
                    continue
                for round_, (mine, theirs) in enumerate(zip(values, direct, strict=True)):
                    added = None if mine is None or theirs is None else mine - theirs
                    name = f"added_{base[:3]}{sep}{variant}"
                    self.put(self.values, name, column, round_, added)
