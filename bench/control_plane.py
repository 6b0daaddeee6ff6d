"""The control plane as an operator's script meets it (issue 11): a real appliance, ``balancer
serve`` in a directory of its own, on each engine, at 10 x 2, 1,000 x 10 and 5,000 x 10 (virtual
services x real servers, persistence on, one port each, nothing answering behind them), driven
through the API on its Unix socket: a one-field save and commit, a full apply, the database's
growth over 1,000 saves; and the ``balancer`` command's own wall time on the guide's appliance.

Every step is capped: a step that would run past its cap is reported as "over N s", and the
steps after it wait for the appliance to answer again, or are not measured. For each target not
met the table is followed by where the time goes: the API's own phases (save, then commit) and
what the appliance's process was doing, from a sampling profiler (``bench.sampled``) turned on
for one more run of that step."""

from __future__ import annotations

import contextlib
import json
import os
import random
import resource
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import tried
from bench.report import DASH, TIMES, number

# --- what is measured, and its goal (pure) -----------------------------------------------------

ENGINES = {"builtin": "built-in", "haproxy": "HAProxy"}
GUIDE = "guide"  # the guide's appliance: the PSM preset, two real servers


@dataclass(frozen=True)
class Size:
    services: int
    servers: int  # real servers per virtual service

    @property
    def key(self) -> str:
        return f"{self.services}x{self.servers}"

    @property
    def text(self) -> str:
        return f"{self.services:,}{TIMES}{self.servers}"


SMALL, JUDGED, LARGE = Size(10, 2), Size(1000, 10), Size(5000, 10)
SIZES = (SMALL, JUDGED, LARGE)


@dataclass(frozen=True)
class Measure:
    key: str
    title: str
    unit: str  # "ms", "s" or "MB"; values are kept in that unit
    goal: float  # at most, in ``unit``
    judged_at: str  # the size key whose figure is held to the goal


MEASURES = (
    Measure("weight", "save + commit: a real server's weight", "ms", 100, JUDGED.key),
    Measure("drain", "drain a real server (acts at once, no commit)", "ms", 100, JUDGED.key),
    Measure("interval", "save + commit: a health-check interval", "ms", 100, JUDGED.key),
    Measure("full_apply", "full apply: the whole configuration onto an empty engine", "s", 2,
            JUDGED.key),
    Measure("db_growth", "database growth over 1,000 one-field saves", "MB", 10, JUDGED.key),
    Measure("cli_status", "`balancer status`, wall time", "s", 0.3, GUIDE),
    Measure("cli_commit", "`balancer commit`, wall time", "s", 0.3, GUIDE),
    Measure("cli_drain", "`balancer rip drain`, wall time", "s", 0.3, GUIDE),
)  # fmt: skip
BY_KEY = {m.key: m for m in MEASURES}


@dataclass(frozen=True)
class Found:
    """What one measure gave at one size on one engine: a value per run, in the measure's unit;
    ``over`` the cap a run ran into (then it is not among ``values``); ``note`` anything the
    figure needs to be read right (extrapolated, fewer runs than asked)."""

    values: Sequence[float] = ()
    over: float | None = None  # seconds
    note: str = ""
    phases: Mapping[str, Sequence[float]] = field(default_factory=dict)  # e.g. save, commit (ms)
    detail: str = ""  # for where the time (or the space) goes


def verdict(measure: Measure, size: str, found: Found | None) -> bool | None:
    """Met, not met, or None where this size is not held to the goal or nothing was measured.
    A run over its cap does not meet a goal below the cap, whatever the other runs gave."""
    if size != measure.judged_at or found is None:
        return None
    if found.over is not None:
        return False
    if not found.values:
        return None
    return statistics.median(found.values) <= measure.goal


def figure(measure: Measure, found: Found | None) -> str:
    """A cell: median (min-max) of the runs and how many, or why there is no figure."""
    if found is None:
        return ""
    parts = []
    if found.values:
        values = list(found.values)
        median = number(statistics.median(values))
        spread = (
            f" ({number(min(values))}{DASH}{number(max(values))})"
            if min(values) != max(values)
            else ""
        )
        runs = f", {len(values)} runs" if len(values) > 1 else ""
        parts.append(f"{median} {measure.unit}{spread}{runs}")
    if found.over is not None:
        parts.append(f"over {found.over:g} s")
    if found.note:
        parts.append(found.note)
    return "; ".join(parts) or "not measured"


Results = dict[str, dict[str, dict[str, Found]]]  # size key -> measure key -> engine -> found
SIZE_TEXT = {s.key: s.text for s in SIZES} | {GUIDE: "guide (PSM preset)"}


def table(results: Results) -> list[str]:
    """The control-plane table, in Markdown: each measure at each size, both engines, and the
    goal met or not at the size the issue sets it for."""
    head = ["measure", "size", "goal", *ENGINES.values()]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for measure in MEASURES:
        for size, shown in SIZE_TEXT.items():
            row = results.get(size, {}).get(measure.key)
            if not row:
                continue
            judged = size == measure.judged_at
            goal = f"≤ {number(measure.goal)} {measure.unit}" if judged else ""
            cells = [measure.title, shown, goal]
            for engine in ENGINES:
                found = row.get(engine)
                met = verdict(measure, size, found)
                state = {None: "", True: " · met", False: " · **not met**"}[met]
                cells.append(figure(measure, found) + state)
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def unmet(results: Results) -> list[tuple[Measure, str, str, Found]]:
    """Each (measure, size, engine) whose goal is not met."""
    found = []
    for measure in MEASURES:
        for engine in ENGINES:
            cell = results.get(measure.judged_at, {}).get(measure.key, {}).get(engine)
            if verdict(measure, measure.judged_at, cell) is False:
                assert cell is not None
                found.append((measure, measure.judged_at, engine, cell))
    return found


def where_lines(results: Results, profiles: Profiles, imports: Mapping[str, Any]) -> list[str]:
    """For each goal not met: the phases, what the appliance was doing, and what was tried."""
    lines: list[str] = []
    for measure, size, engine, found in unmet(results):
        lines += ["", f"#### {measure.title}, {SIZE_TEXT[size]}, {ENGINES[engine]}", ""]
        for phase, values in found.phases.items():
            if values:
                lines.append(f"- {phase}: {number(statistics.median(values))} ms (median)")
        if found.detail:
            lines.append(f"- {found.detail}")
        profile = profiles.get(f"{measure.key}|{engine}")
        if profile:
            lines += profile_lines(profile)
        if measure.key in imports:
            lines += import_lines(imports[measure.key])
        lines += ["", "Tried:"] + [f"- {t}" for t in tried.for_scenario(f"control_{measure.key}")]
    if lines:
        lines = ["", "### Where the time goes, for the goals not met", *lines]
    return lines


PROCESSES = {"serve": "`balancer serve`", "engine": "the built-in engine's process"}


def profile_lines(profiles: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """What each process sampled was doing (``bench.sampled``); HAProxy is not sampled."""
    lines = []
    for process, profile in profiles.items():
        ticks, busy = profile["ticks"], profile["busy_ticks"]
        name = PROCESSES.get(process, process)
        if not ticks:
            lines.append(f"- {name}: no sample taken")
            continue
        lines.append(
            f"- {name} ({profile['seconds']:.1f} s sampled) was busy in "
            f"{busy / ticks * 100:.0f}% of {ticks:,} samples, waiting in the rest (for the "
            "other process, the disk or the next request). Under our own functions (% of its "
            "busy samples):"
        )
        share = [(n, c / max(busy, 1) * 100) for n, c in profile["ours"]]
        lines += [f"  - {n}: {p:.0f}%" for n, p in share]
        lines.append("  - and innermost, what ran:")
        inner = [(n, c / max(busy, 1) * 100) for n, c in profile["inner"]]
        lines += [f"    - {n}: {p:.0f}%" for n, p in inner]
    return lines


def import_lines(found: Mapping[str, Any]) -> list[str]:
    lines = [f"- imports: {found['total_ms']:.0f} ms of the command; the largest (cumulative):"]
    lines += [f"  - {name}: {ms:.0f} ms" for name, ms in found["top"]]
    return lines


Profiles = Mapping[str, Mapping[str, Mapping[str, Any]]]  # "measure|engine" -> process -> stats


def markdown(
    results: Results,
    profiles: Profiles,
    imports: Mapping[str, Any],
    setting: str,
    notes: Sequence[str] = (),
) -> list[str]:
    return [
        "## The control plane (issue 11)",
        "",
        setting,
        "",
        *table(results),
        *(["", *notes] if notes else []),
        *where_lines(results, profiles, imports),
    ]


def as_json(results: Results) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for size, measures in results.items():
        for key, engines in measures.items():
            measure = BY_KEY[key]
            for engine, found in engines.items():
                values = list(found.values)
                document.setdefault(size, {}).setdefault(key, {})[engine] = {
                    "unit": measure.unit,
                    "values": values,
                    **(
                        {"median": statistics.median(values), "min": min(values),
                         "max": max(values)}
                        if values else {}
                    ),
                    "over_seconds": found.over,
                    "note": found.note,
                    "detail": found.detail,
                    "phases_ms": {k: list(v) for k, v in found.phases.items()},
                    "goal": measure.goal if size == measure.judged_at else None,
                    "met": verdict(measure, size, found),
                }  # fmt: skip
    return document


# --- the configurations --------------------------------------------------------------------------

# 127.8.0.0/15: away from the other scenarios' 127.5.x.x and from the tests' 127.64-254.x.x.
CHECK_INTERVAL = 60.0  # seconds: checks on, but not what is measured


def vip(index: int) -> str:
    return f"127.8.{index // 250}.{index % 250 + 1}"


def real_server_ip(index: int) -> str:
    return f"127.9.{index // 250}.{index % 250 + 1}"


def fitted(document: dict[str, Any], engine: str) -> str:
    """On HAProxy, under an open-files limit too low for a check of every real server, checks
    off on as many services as it takes (the last ones): HAProxy would refuse the whole
    configuration, as issue 11 wants it to. What was turned off, in words; "" if nothing."""
    if engine != "haproxy":
        return ""
    from balancer.engines.haproxy import limits
    from balancer.engines.haproxy.render import files
    from balancer.validate import parse

    limit = limits.Limit.of_this_process()
    counted = files(parse(document), limit)
    short = counted.fixed + limits.PER_CONNECTION * limits.MINIMUM_CONNECTIONS - limit.open_files
    if short <= 0:
        return ""
    services = document["virtual_services"]
    per_service = (counted.checks + counted.check_ports) / len(services)
    unchecked = min(len(services), int(short // per_service) + 1)
    for service in services[len(services) - unchecked :]:
        service["health_check"] = {"type": "none"}
    return (
        f"checks off on the last {unchecked:,} of {len(services):,} services, the open-files "
        f"limit ({limit.open_files:,}) being too low for a check of every real server"
    )


def configuration(size: Size, port: int) -> dict[str, Any]:
    """``size`` virtual services, each on its own address and ``port``, persistence on, a
    TCP-connect check, its real servers on addresses nothing listens on."""
    return {
        "virtual_services": [
            {
                "label": f"vs{i}",
                "ip": vip(i),
                "ports": str(port),
                "balancing": "round_robin",
                "persistence": {"mode": "source_ip"},
                "health_check": {"type": "connect", "interval": CHECK_INTERVAL},
                "real_servers": [
                    {"label": f"rs{j}", "ip": real_server_ip(i * size.servers + j)}
                    for j in range(size.servers)
                ],
            }
            for i in range(size.services)
        ]
    }


# --- a running appliance -------------------------------------------------------------------------

HOOK = Path(__file__).parent / "hook"
START_CAP = 120.0  # seconds for `balancer serve` to listen
STEP_CAP = 30.0  # seconds for one API call of a one-field step
FULL_CAP = 120.0  # seconds for the full apply
STEP_BUDGET = 45.0  # seconds of repeated runs of one step at one size
GROWTH_SAVES = 1000
GROWTH_BUDGET = 60.0  # seconds of saves; fewer than 1,000 are extrapolated
REPEATS = 5
CLI_RUNS = 10


class Over(Exception):
    """A call ran past its cap."""


class Failed(Exception):
    """The appliance refused a call, or could not be reached: the API's one-line reason."""


def free_port(hosts: Sequence[str]) -> int:
    """A port free on every one of ``hosts``, below Linux's ephemeral range (32768 on), which
    the appliance's own health checks draw thousands of ports from at 5,000 x 10."""
    for _ in range(100):
        port = random.randrange(20000, 32000)
        try:
            for host in hosts:
                with socket.socket() as sock:
                    sock.bind((host, port))
        except OSError:
            continue
        return port
    raise RuntimeError(f"no port free on {hosts}")


class Appliance:
    """`balancer serve` on a data directory the bench seeded, under ``bench.sampled``."""

    def __init__(self, root: Path, engine: str) -> None:
        from balancer.client import api_socket

        self.root = root
        self.engine = engine
        self.data_dir = root / "appliance"
        self.socket = api_socket(self.data_dir)
        self.samples = root / "samples"
        self.process: subprocess.Popen[bytes] | None = None

    def seed(self, document: dict[str, Any]) -> None:
        """The configuration saved, not applied: the engine starts empty."""
        from balancer.store import Store
        from balancer.validate import parse

        self.data_dir.mkdir(parents=True)
        with Store(self.data_dir / "balancer.db") as store:
            store.save(parse(document), base=store.head().id, author="bench", message="bench seed")

    def start(self) -> None:
        port = free_port(["127.0.0.1"])
        self.samples.mkdir()
        # Every Python of the appliance gets the sampler: bench/hook/sitecustomize.py.
        path = [str(HOOK), str(HOOK.parent.parent), os.environ.get("PYTHONPATH", "")]
        env = {
            **os.environ,
            "BENCH_SAMPLES": str(self.samples),
            "PYTHONPATH": os.pathsep.join(path),
        }
        with (self.root / "serve.err").open("ab") as errors:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "balancer", "serve",
                 "--dir", str(self.data_dir), "--listen", "127.0.0.1",
                 "--https-port", str(port), "--engine", self.engine],
                env=env, stdout=subprocess.DEVNULL, stderr=errors,
            )  # fmt: skip
        deadline = time.monotonic() + START_CAP
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"balancer serve exited: {self.last_error()}")
            with socket.socket(socket.AF_UNIX) as probe:
                if probe.connect_ex(str(self.socket)) == 0:
                    return
            time.sleep(0.1)
        raise Over(START_CAP)

    def last_error(self) -> str:
        lines = (self.root / "serve.err").read_text(errors="replace").strip().splitlines()
        return lines[-1] if lines else "nothing on stderr"

    def call(
        self, method: str, path: str, body: Any = None, cap: float = STEP_CAP, **params: str
    ) -> float:
        """One API call; its wall time in ms. Past ``cap``: Over."""
        from balancer.client import ApiError, Client

        with Client(self.socket, user="bench", timeout=cap) as client:
            started = time.perf_counter()
            try:
                client.call(method, path, body, **params)
            except ApiError as error:
                if time.perf_counter() - started >= cap * 0.99:
                    raise Over(cap) from None
                raise Failed(str(error)) from None
            return (time.perf_counter() - started) * 1000

    def answers(self, within: float) -> bool:
        """Whether the appliance answers again (after a call that ran past its cap)."""
        with contextlib.suppress(Over, Failed):
            self.call("GET", "/changes", cap=within)
            return True
        return False

    @contextlib.contextmanager
    def sampled(self) -> Iterator[dict[str, Any]]:
        """What `serve` and the built-in engine were doing, by process: filled in when the
        block ends."""
        assert self.process is not None
        pids = {"serve": self.process.pid}
        with contextlib.suppress(OSError, ValueError):
            pids["engine"] = int((self.data_dir / "engine.pid").read_text())
        found: dict[str, Any] = {}
        for pid in pids.values():
            (self.samples / f"{pid}.json").unlink(missing_ok=True)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGUSR1)
        try:
            yield found
        finally:
            for process, pid in pids.items():
                written = self.samples / f"{pid}.json"
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGUSR2)
                deadline = time.monotonic() + 10
                while not written.exists() and time.monotonic() < deadline:
                    time.sleep(0.05)
                with contextlib.suppress(OSError, ValueError):
                    found[process] = json.loads(written.read_text())

    def database_bytes(self) -> int:
        """The database's size once its write-ahead log is folded into it."""
        path = self.data_dir / "balancer.db"
        with contextlib.closing(sqlite3.connect(path, timeout=30)) as db:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        wal = path.with_name(path.name + "-wal")
        return path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)

    def stop(self) -> None:
        """`balancer stop --engine`; then every process still running on this appliance's
        data directory (its own, made by the bench) is killed: a built-in engine restarted at
        5,000 x 10 was seen to outlive `serve` without its pid file."""
        if self.process is None:
            return
        with contextlib.suppress(Over, Failed):
            self.call("POST", "/shutdown", cap=30, engine="true")
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for pid in self.left_behind():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)

    def left_behind(self) -> list[int]:
        """The processes whose command line names this appliance's data directory, or a file
        in it (HAProxy's)."""
        named = str(self.data_dir).encode()
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and int(entry.name) != os.getpid():
                with contextlib.suppress(OSError):
                    if named in (entry / "cmdline").read_bytes():
                        found.append(int(entry.name))
        return found


# --- the steps -----------------------------------------------------------------------------------


@dataclass
class Run:
    settings: RunSettings
    results: Results = field(default_factory=dict)
    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)
    imports: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(
        default_factory=list
    )  # what a size ran with that the setting does not say

    def put(self, size: str, key: str, engine: str, found: Found) -> None:
        self.results.setdefault(size, {}).setdefault(key, {})[engine] = found
        print(f"  {size:<10} {engine:<8} {key:<11} {figure(BY_KEY[key], found)}", flush=True)


@dataclass(frozen=True)
class RunSettings:
    sizes: tuple[Size, ...] = SIZES
    repeats: int = REPEATS
    growth_budget: float = GROWTH_BUDGET
    cli_runs: int = CLI_RUNS
    open_files: int = 0  # the limit `balancer serve` and its engine inherit


Step = Callable[[Appliance, int], dict[str, float]]  # the appliance, the run -> phases in ms


def weight(service: str, server: str) -> Step:
    def step(box: Appliance, run: int) -> dict[str, float]:
        path = f"/virtual-services/{service}/real-servers/{server}"
        save = box.call("PATCH", path, {"weight": 50 + run % 2})
        return {"save": save, "commit": box.call("POST", "/commit")}

    return step


def drain(service: str, server: str) -> Step:
    def step(box: Appliance, run: int) -> dict[str, float]:
        path = f"/virtual-services/{service}/real-servers/{server}/state"
        took = box.call("POST", path, {"state": "drain"})
        box.call("POST", path, {"state": "online"})  # for the next run; not counted
        return {"drain": took}

    return step


def interval(service: str) -> Step:
    def step(box: Appliance, run: int) -> dict[str, float]:
        body = {"health_check": {"interval": CHECK_INTERVAL + 1 + run % 2}}
        save = box.call("PATCH", f"/virtual-services/{service}", body)
        return {"save": save, "commit": box.call("POST", "/commit")}

    return step


def repeated(box: Appliance, step: Step, repeats: int) -> Found:
    """The step ``repeats`` times, or as many as fit in STEP_BUDGET (at least one)."""
    totals: list[float] = []
    phases: dict[str, list[float]] = {}
    started = time.monotonic()
    for run in range(repeats):
        try:
            took = step(box, run)
        except Over as over:
            return Found(totals, over.args[0], phases=phases)
        except Failed as error:
            return Found(totals, note=f"failed: {error}", phases=phases)
        totals.append(sum(took.values()))
        for phase, ms in took.items():
            phases.setdefault(phase, []).append(ms)
        if time.monotonic() - started > STEP_BUDGET:
            break
    note = f"{len(totals)} of {repeats} runs in {STEP_BUDGET:g} s" if len(totals) < repeats else ""
    return Found(totals, note=note, phases=phases)


def at_size(run: Run, size: Size, engine: str, work: Path, growth: bool) -> None:
    root = Path(tempfile.mkdtemp(prefix=f"cp-{engine}-{size.key}-", dir=work))
    box = Appliance(root, engine)
    port = free_port([vip(0), real_server_ip(0)])
    document = configuration(size, port)
    fit = fitted(document, engine)
    if fit:
        run.notes.append(f"{ENGINES[engine]} at {size.text}: {fit}.")
    try:
        box.seed(document)
        box.start()
    except (Over, RuntimeError, OSError, ValueError) as error:
        why = f"over {START_CAP:g} s to start" if isinstance(error, Over) else str(error)
        for key in ("full_apply", "weight", "drain", "interval"):
            run.put(size.key, key, engine, Found(note=f"not measured: {why}"))
        box.stop()
        return
    judged = size == JUDGED
    try:
        with box.sampled() as profile:
            try:
                full = Found([box.call("POST", "/commit", cap=FULL_CAP) / 1000])
            except Over:
                full = Found(over=FULL_CAP)
            except Failed as error:
                full = Found(note=f"failed: {error}")
        if judged:
            run.profiles[f"full_apply|{engine}"] = profile
        run.put(size.key, "full_apply", engine, full)
        if not full.values and not box.answers(FULL_CAP):
            for key in ("weight", "drain", "interval"):
                run.put(size.key, key, engine, Found(note="not measured: the appliance is busy"))
            return
        steps = {  # on the first service, which keeps its checks whatever ``fitted`` did
            "weight": weight("vs0", "rs1"),
            "drain": drain("vs0", "rs0"),
            "interval": interval("vs0"),
        }
        for key, step in steps.items():
            found = repeated(box, step, run.settings.repeats)
            run.put(size.key, key, engine, found)
            if judged and verdict(BY_KEY[key], size.key, found) is False:
                if found.over is not None and not box.answers(FULL_CAP):
                    break
                with box.sampled() as profile, contextlib.suppress(Over, Failed):
                    step(box, run.settings.repeats)
                run.profiles[f"{key}|{engine}"] = profile
        if growth:
            run.put(size.key, "db_growth", engine, database_growth(box, size, run.settings))
    finally:
        box.stop()


def database_growth(box: Appliance, size: Size, settings: RunSettings) -> Found:
    """1,000 saves of one weight each, without commits; if they do not fit in the budget,
    what the saves that did add, per save, times 1,000."""
    before = box.database_bytes()
    started, saves = time.monotonic(), 0
    for n in range(GROWTH_SAVES):
        service, server = f"vs{n % size.services}", f"rs{n // size.services % size.servers}"
        path = f"/virtual-services/{service}/real-servers/{server}"
        try:
            box.call("PATCH", path, {"weight": 1 + n % 200})
        except Over as over:
            return Found(over=over.args[0], note=f"after {saves} saves")
        except Failed as error:
            return Found(note=f"failed after {saves} saves: {error}")
        saves += 1
        if time.monotonic() - started > settings.growth_budget:
            break
    grown = (box.database_bytes() - before) / 1e6
    detail = f"{grown / saves * 1000:,.1f} KB a save, over {saves:,} saves"
    if saves == GROWTH_SAVES:
        return Found([grown], detail=detail)
    note = f"extrapolated from {saves} saves in {settings.growth_budget:g} s"
    return Found([grown / saves * GROWTH_SAVES], note=note, detail=detail)


# --- the command line on the guide's appliance ---------------------------------------------------

CLI_COMMANDS = {
    "cli_status": ("status",),
    "cli_commit": ("commit",),
    "cli_drain": ("rip", "drain", "CyberArk-PSM", "PSM1"),
}


def command_line() -> list[str]:
    """How an operator runs ``balancer``: its console script, else ``python -m balancer``."""
    script = Path(sys.executable).with_name("balancer")
    return [str(script)] if script.exists() else [sys.executable, "-m", "balancer"]


def cli_environment(box: Appliance, pycache: Path) -> dict[str, str]:
    # Bytecode cached, as on an installed appliance after the first run; in a directory of
    # the bench's own, so that no source tree is written to.
    dropped = ("BALANCER_", "PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    return {**env, "BALANCER_DIR": str(box.data_dir), "PYTHONPYCACHEPREFIX": str(pycache)}


def timed(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """The command's wall time, and its CPU time (user and system), which whatever else the
    machine runs does not add to."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, timeout=60, check=False)
    took = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.decode(errors="replace").strip() or "failed")
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return took, cpu


def imports_of(command: list[str], env: dict[str, str]) -> dict[str, Any]:
    """``python -X importtime``'s largest cumulative imports of the command."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "balancer", *command],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    rows = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line or "[us]" in line:
            continue
        _, cumulative, name = line.split("|")
        depth = len(name) - len(name.lstrip())
        rows.append((name.strip(), int(cumulative) / 1000, depth))
    top_level = [r for r in rows if r[2] == 1]
    return {
        "total_ms": sum(ms for _, ms, _ in top_level),
        "top": [(n, ms) for n, ms, _ in sorted(top_level, key=lambda r: -r[1])[:8]],
    }


def guide(run: Run, engine: str, work: Path) -> None:
    root = Path(tempfile.mkdtemp(prefix=f"cp-{engine}-guide-", dir=work))
    box = Appliance(root, engine)
    ips = [f"127.8.254.{n}" for n in (1, 2, 105, 106)]
    rdp, web = free_port(ips), free_port(ips)
    preset = {
        "rdp_vip": ips[0], "web_vip": ips[1], "servers": [["PSM1", ips[2]], ["PSM2", ips[3]]],
        "rdp_port": rdp, "web_port": web,
    }  # fmt: skip
    pycache = work / "pycache"
    try:
        box.seed({"virtual_services": []})
        box.start()
        box.call("POST", "/presets/psm", preset)
        box.call("POST", "/commit")
        env = cli_environment(box, pycache)
        base = command_line()
        # The commands' wall time is the machine's as much as theirs: say how busy it was.
        load = os.getloadavg()[0]
        run.notes.append(
            f"The `balancer` commands on {ENGINES[engine]}: load average {load:.1f} on "
            f"{os.cpu_count()} cores as they started."
        )
        for key, args in CLI_COMMANDS.items():
            try:
                timed([*base, *args], env)  # the first run writes the bytecode
                took, cpu = [], []
                for _ in range(run.settings.cli_runs):
                    wall, used = timed([*base, *args], env)
                    took.append(wall)
                    cpu.append(used)
                    if key == "cli_drain":
                        timed([*base, "rip", "online", *args[2:]], env)
                detail = f"its own CPU time: {statistics.median(cpu):.2f} s a run (median)"
                found = Found(took, detail=detail)
            except (RuntimeError, subprocess.TimeoutExpired) as error:
                found = Found(note=f"not measured: {error}")
            run.put(GUIDE, key, engine, found)
            if verdict(BY_KEY[key], GUIDE, found) is False:
                run.imports[key] = imports_of(list(args), env)
    except (Over, Failed, RuntimeError, OSError) as error:
        for key in CLI_COMMANDS:
            run.put(GUIDE, key, engine, Found(note=f"not measured: {error}"))
    finally:
        box.stop()


def describe(settings: RunSettings) -> str:
    sizes = ", ".join(s.text for s in settings.sizes)
    return (
        f"`balancer serve` on each engine, started afresh for each size ({sizes}: virtual "
        f"services {TIMES} real servers, persistence on, one port each, a TCP-connect check "
        f"every {CHECK_INTERVAL:g} s, nothing listening behind), driven through the API on its "
        "Unix socket as an operator's script would. A one-field step is repeated up to "
        f"{settings.repeats} times ({STEP_BUDGET:g} s at most; each call capped at "
        f"{STEP_CAP:g} s): median (min{DASH}max). The full apply is one commit of the whole "
        "configuration, saved before `serve` started, onto the engine that runs nothing yet "
        f"(capped at {FULL_CAP:g} s). Database growth: {GROWTH_SAVES:,} saves of one weight "
        "without commits, the database measured with its write-ahead log folded in; it is the "
        "store's, so it is measured on the first engine only. The `balancer` commands run "
        f"{settings.cli_runs} times each on the guide's appliance (the PSM preset), bytecode "
        f"cached as after a first run. Open-files limit {settings.open_files:,} (HAProxy sizes "
        "itself to it). The goals are issue 11's, held at 1,000 "
        f"{TIMES} 10 and at the guide's size; the other sizes are for comparison."
    )


def run(work: Path, settings: RunSettings) -> tuple[list[str], dict[str, Any]]:
    """Every size on every engine; the Markdown section and its JSON."""
    print("the control plane", flush=True)
    found = Run(settings)
    for engine in ENGINES:
        guide(found, engine, work)
        for size in settings.sizes:
            at_size(found, size, engine, work, growth=engine == next(iter(ENGINES)))
    lines = markdown(found.results, found.profiles, found.imports, describe(settings), found.notes)
    document = {
        "results": as_json(found.results),
        "profiles": found.profiles,
        "imports": found.imports,
        "notes": found.notes,
    }
    return lines, document
