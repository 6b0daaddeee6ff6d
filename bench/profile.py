"""Where the time goes, for each target the built-in engine did not meet.

After the rounds, each such target's scenario runs once more against a fresh built-in engine
and a fresh HAProxy, under ``perf stat`` (system calls, and wakeups of other processes: on a VM
each one that crosses to the other core is dear) and ``perf record`` (where the CPU ran: the
kernel, the Python interpreter, uvloop and libuv, libc, HAProxy; and the busiest functions),
with the user and system CPU each proxy used read from /proc, all per unit of work (a
connection, a MB relayed). For memory per idle connection it measures what a uvloop transport
takes (``bench.transports``), two of which every relayed connection holds. Then what was tried
for that target (``bench.tried``). Without ``perf`` the /proc figures are still given.

The parsers and the Markdown are pure; ``profile`` runs the processes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import procfs, tried
from bench.report import Target, Verdict, number
from bench.scenarios import BenchError, Outcome

PERF_EVENTS = ("raw_syscalls:sys_enter", "sched:sched_wakeup")
SAMPLING_HZ = 999
TOP_FUNCTIONS = 6
ATTACH = 0.3  # seconds for perf to attach before the load starts


# --- what to profile ------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """A run to profile: its name, the unit its figures are given per, and how many of those
    units a run's outcome did."""

    key: str  # "bulk_1", "connect_50", "serial"
    title: str
    unit: str  # "MB relayed", "connection"


def scenario_for(target: Target) -> Scenario | None:
    """The run that shows where a target's time goes; None for memory (measured apart) and
    for targets no run here explains."""
    metric = target.metric
    if metric.startswith("bulk_"):
        streams = metric.partition("_")[2]
        plural = "s" if streams != "1" else ""
        return Scenario(metric, f"bulk, {streams} stream{plural}", "MB relayed")
    if metric == "connect_50":
        return Scenario(metric, "new connections, 50 at once", "connection")
    if metric == "added_p99":
        return Scenario("serial", "one connection at a time", "connection")
    return None


def units_done(scenario: Scenario, result: dict[str, Any]) -> float:
    """MB the sink received, or connections completed, by the generator's own count."""
    if scenario.unit == "MB relayed":
        return float(result.get("received", 0)) / 1e6
    return float(result.get("counted", 0))


# --- parsing perf -----------------------------------------------------------------------------


def parse_perf_stat(text: str) -> dict[str, float]:
    """``perf stat -x,`` output: each event counted, by name; events perf could not count are
    left out."""
    found = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        fields = line.split(",")
        if len(fields) < 3:
            continue
        try:
            found[fields[2]] = float(fields[0])
        except ValueError:
            continue  # "<not counted>", "<not supported>"
    return found


SAMPLE_LINE = re.compile(r"^\s*([\d.]+)%\s+(\S+)(?:\s+\[(.)\]\s+(.+?))?\s*$")


def parse_perf_report(text: str) -> list[tuple[float, str, str]]:
    """``perf report -q --sort dso[,sym]`` lines: (percent of samples, shared object, symbol
    or "")."""
    rows = []
    for line in text.splitlines():
        match = SAMPLE_LINE.match(line)
        if match:
            percent, dso, _, symbol = match.groups()
            rows.append((float(percent), dso, symbol or ""))
    return rows


def where(dso: str) -> str:
    """What a shared object is, in the words of the report."""
    name = Path(dso).name
    if dso.startswith("[kernel"):
        return "kernel"
    if name.startswith("libpython") or name.startswith("python3"):
        return "Python interpreter"
    if name.startswith("loop.cpython"):
        return "uvloop and libuv"
    if name.startswith("libc.so") or name.startswith("libc-"):
        return "libc"
    if name == "haproxy":
        return "HAProxy"
    return "other"


def shares(rows: Sequence[tuple[float, str, str]]) -> dict[str, float]:
    """Percent of the CPU samples by where they ran, largest first."""
    found: dict[str, float] = {}
    for percent, dso, _ in rows:
        kind = where(dso)
        found[kind] = found.get(kind, 0.0) + percent
    return dict(sorted(found.items(), key=lambda item: -item[1]))


# --- one profiled run -------------------------------------------------------------------------


@dataclass
class Figures:
    """One proxy's profile of one scenario."""

    units: float
    user: float  # CPU seconds
    system: float
    counted: dict[str, float] = field(default_factory=dict)  # perf stat: event -> count
    where: dict[str, float] = field(default_factory=dict)  # percent of samples
    functions: list[tuple[float, str, str]] = field(default_factory=list)

    def per_unit(self, value: float) -> float | None:
        return value / self.units if self.units > 0 else None

    def as_json(self) -> dict[str, Any]:
        return {
            "units": self.units,
            "user_seconds": self.user,
            "system_seconds": self.system,
            "perf_stat": self.counted,
            "cpu_share_percent": self.where,
            "top_functions": [list(row) for row in self.functions],
        }


def perf_usable() -> bool:
    return shutil.which("perf") is not None


async def _spawn(*words: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *words, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )


async def _end(process: asyncio.subprocess.Process) -> None:
    """perf writes what it counted when interrupted, as on Ctrl-C."""
    if process.returncode is None:
        process.send_signal(signal.SIGINT)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(process.wait(), 30)
    if process.returncode is None:
        process.kill()
        await process.wait()


async def _report(data: Path, sort: str) -> str:
    process = await asyncio.create_subprocess_exec(
        "perf", "report", "-q", "-i", str(data), "--stdio", "--no-children", "--sort", sort,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    out, _ = await process.communicate()
    return out.decode(errors="replace")


async def measure(
    scenario: Scenario,
    pids: list[int],
    run: Callable[[str], Awaitable[Outcome]],
    target: str,
    work: Path,
    use_perf: bool,
) -> Figures:
    """Run once against ``target`` with perf attached to ``pids``; the figures of that run."""
    stat, samples = work / "perf-stat.txt", work / "perf.data"
    watchers = []
    if use_perf:
        targets = ",".join(str(pid) for pid in pids)
        events = ",".join(PERF_EVENTS)
        watchers.append(
            await _spawn("perf", "stat", "-x,", "-o", str(stat), "-e", events, "-p", targets)
        )
        watchers.append(
            await _spawn(
                "perf", "record", "-q", "-F", str(SAMPLING_HZ), "-o", str(samples), "-p", targets
            )
        )
        await asyncio.sleep(ATTACH)
    before = procfs.cpu_split(pids)
    try:
        outcome = await run(target)
    finally:
        after = procfs.cpu_split(pids)
        for watcher in watchers:
            await _end(watcher)
    if outcome.problems:
        raise BenchError(f"profiling {scenario.title}: {'; '.join(outcome.problems)}")
    figures = Figures(units_done(scenario, outcome.raw), after[0] - before[0], after[1] - before[1])
    if use_perf:
        with contextlib.suppress(OSError):
            figures.counted = parse_perf_stat(stat.read_text())
        figures.where = shares(parse_perf_report(await _report(samples, "dso")))
        figures.functions = parse_perf_report(await _report(samples, "dso,sym"))[:TOP_FUNCTIONS]
    return figures


# --- memory -----------------------------------------------------------------------------------


async def transport_bytes(connections: int) -> dict[str, Any]:
    """What one uvloop transport takes, measured in a child process (``bench.transports``)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.transports", str(connections),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate()
    if process.returncode != 0:
        raise BenchError(f"bench.transports: exit {process.returncode}: {err.decode()[-500:]}")
    found: dict[str, Any] = json.loads(out)
    return found


# --- Markdown -----------------------------------------------------------------------------------


@dataclass
class Profile:
    """Where the time went in one scenario, for the built-in engine and HAProxy."""

    scenario: Scenario
    targets: list[Verdict]
    proxies: dict[str, Figures]  # "builtin", "haproxy"
    perf: bool


def _per(figures: Figures, value: float | None, scale: float = 1.0) -> str:
    if value is None:
        return "n/a"
    found = figures.per_unit(value)
    return "n/a" if found is None else number(found * scale)


Shown = dict[tuple[str, ...], str]  # what was tried, already printed -> under which heading


def tried_lines(key: str, heading: str, shown: Shown) -> list[str]:
    """What was tried for ``key``; once only when several scenarios share it."""
    found = tried.for_scenario(key)
    if found in shown:
        return ["", f"What was tried: as for {shown[found]}, above."]
    shown[found] = heading
    return ["", "What was tried:", "", *(f"- {line}" for line in found)]


def profile_lines(profile: Profile, shown: Shown) -> list[str]:
    scenario = profile.scenario
    targets = "; ".join(f"{v.target.text}: {v.text()}" for v in profile.targets)
    lines = [f"### {scenario.title} ({targets})", ""]
    columns = [c for c in ("builtin", "haproxy") if c in profile.proxies]
    names = {"builtin": "built-in", "haproxy": "HAProxy"}
    lines += [
        f"| per {scenario.unit} | " + " | ".join(names[c] for c in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    rows: list[tuple[str, Callable[[Figures], str]]] = [
        ("CPU, user (µs)", lambda f: _per(f, f.user, 1e6)),
        ("CPU, system (µs)", lambda f: _per(f, f.system, 1e6)),
        ("system calls", lambda f: _per(f, f.counted.get("raw_syscalls:sys_enter"))),
        (
            "wakeups of other processes",
            lambda f: _per(f, f.counted.get("sched:sched_wakeup"), 1.0),
        ),
    ]
    for title, cell in rows:
        lines.append(f"| {title} | " + " | ".join(cell(profile.proxies[c]) for c in columns) + " |")
    if profile.perf:
        kinds = list(dict.fromkeys(k for c in columns for k in profile.proxies[c].where))
        for kind in kinds:
            cells = []
            for column in columns:
                share = profile.proxies[column].where.get(kind)
                cells.append("" if share is None else f"{share:.0f}%")
            lines.append(f"| CPU in {kind} | " + " | ".join(cells) + " |")
        for column in columns:
            top = profile.proxies[column].functions
            if top:
                listed = ", ".join(
                    f"{symbol or dso} {percent:.0f}%" for percent, dso, symbol in top
                )
                lines += ["", f"Busiest functions, {names[column]}: {listed}."]
    else:
        lines += ["", "`perf` is not installed: no system call counts nor CPU samples."]
    return lines + tried_lines(scenario.key, scenario.title, shown)


def memory_lines(
    verdict: Verdict, found: dict[str, Any], measured: dict[str, float], shown: Shown
) -> list[str]:
    """Memory per idle connection, and how much of it is uvloop's two transports."""
    per_transport = found["bytes_per_transport"] / 1024
    relay = found["relay_objects_bytes"] / 1024
    lines = [f"### memory per idle connection ({verdict.target.text}: {verdict.text()})", ""]
    builtin, haproxy = measured.get("builtin"), measured.get("haproxy")
    if builtin is not None and haproxy is not None and verdict.target.at_most is not None:
        goal = haproxy * verdict.target.at_most
        lines.append(
            f"The built-in engine held {builtin:.2f} KiB per idle connection, HAProxy "
            f"{haproxy:.2f} KiB: the target is {goal:.2f} KiB or less."
        )
    lines.append(
        f"A relayed connection holds two uvloop transports (the client's and the real "
        f"server's), each {per_transport:.2f} KiB with its libuv handle and uvloop's weak "
        f"reference to it ({found['connections']:,} connections measured with tracemalloc in "
        f"a child process): {2 * per_transport:.2f} KiB, before anything of the engine's own. "
        f"The relay's own two objects take {relay:.2f} KiB."
    )
    return lines + tried_lines("idle_memory", "memory per idle connection", shown)


HEADING = (
    "## Where the time goes, for the targets not met\n\n"
    "Each scenario once more on a fresh built-in engine and HAProxy, under `perf stat` and "
    "`perf record` (one sample every millisecond), per unit of work. CPU user and system are "
    "the proxy's processes' own, from /proc; the CPU shares are of perf's samples."
)
