"""One bench run: the backends and the generator on one core, each proxy pinned to the other,
every scenario in rounds that take each proxy in turn (so the ratio of one proxy to another is
computed within a round), then the report as Markdown, JSON and a plot."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from balancer.engines import EngineError
from balancer.model import Config
from bench import control_plane, ha, procfs, profile, proxies, replication, scale, scenarios
from bench.proxies import Proxy
from bench.record import LOAD_CORE, PROXY_CORE, Recorder
from bench.report import DASH, Report, Verdict, document, markdown, spread, verdicts
from bench.scenarios import BenchError, Outcome, Tools

HERE = Path(__file__).parent
# 127.5.0.0/16: away from 127.0.x.x and from the tests' 127.64-254.x.x.
VIPS = "127.5.0."
SERVERS = ["127.5.1.1", "127.5.1.2"]
CLIENTS, CLIENT_COUNT = "127.5.100.1", 256
IDLE_CONNS = 10_000
CONTROL_PLANE = "control-plane"  # issue 11's scenario: bench/control_plane.py
SCALE = "scale"  # issue 11's built-in engine at 1,000 x 10: bench/scale.py
HA = "ha"  # issue 12's failover of the HA pair: bench/ha.py
# HAProxy sizes itself to its open-files limit and refuses what does not fit: 5,000 x 10 with
# a check each needs about 105,000.
CONTROL_OPEN_FILES = 1 << 17
PAUSE = 0.5  # seconds between runs: the sockets of one run close before the next
TRANSPORTS_MEASURED = 2000  # connections, for the memory a uvloop transport takes


@dataclass(frozen=True)
class Settings:
    duration: float = 4.0  # seconds of each run
    rounds: int = 3
    idle_conns: int = IDLE_CONNS
    scenarios: tuple[str, ...] = ("bulk", "connect", "serial", "idle", SCALE, CONTROL_PLANE, HA)
    out: Path = HERE / "results"
    profile: bool = True  # where the time goes, for each target not met
    build: Path = HERE / "build"
    quick: bool = False  # for development: fewer runs and sizes


# --- the machine -----------------------------------------------------------------------------


def cores() -> tuple[set[int] | None, set[int] | None, set[int] | None]:
    """The proxy's core, the generator's, and the two cores of the two-core variants (the
    proxy's and a third if there is one, else the generator's); None for each on a machine
    with one core, where nothing is pinned."""
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        return None, None, None
    proxy, load, *more = available
    return {proxy}, {load}, {proxy, (more or [load])[0]}


def raise_open_files(wanted: int) -> int:
    """Raise this process's open-files limit, which the generator, the backends and the
    engines inherit; return the soft limit they get. Without CAP_SYS_RESOURCE only the soft
    limit can rise, to the hard one."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    nr_open = int(Path("/proc/sys/fs/nr_open").read_text())
    ceiling = nr_open if hard == resource.RLIM_INFINITY else min(hard, nr_open)
    if ceiling < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return wanted
    resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, hard))
    return ceiling


def free_ports(addresses: list[str], count: int) -> list[int]:
    """``count`` port numbers free on every address."""
    found: list[int] = []
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind((addresses[0], 0))
            port = probe.getsockname()[1]
        try:
            for ip in addresses:
                with socket.socket() as sock:
                    sock.bind((ip, port))
        except OSError:
            continue
        if port not in found:
            found.append(port)
        if len(found) == count:
            return found
    raise BenchError(f"no {count} ports free on {addresses}")


def machine() -> dict[str, Any]:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.machine(),
    )
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    version = subprocess.run([haproxy, "-v"], capture_output=True, text=True, check=False)
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "haproxy": (version.stdout.splitlines() or ["?"])[0],
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


@contextlib.asynccontextmanager
async def backends(tools: Tools, ports: list[int]) -> AsyncIterator[None]:
    process = await asyncio.create_subprocess_exec(
        str(tools.backends), "--sink-port", str(ports[0]), "--echo-port", str(ports[1]),
        *SERVERS, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        if await asyncio.wait_for(process.stdout.readline(), 10) != b"ready\n":
            raise BenchError("the backends did not start")
        yield
    finally:
        if process.returncode is None:
            process.terminate()
        await process.wait()


def bulk(tools: Tools, streams: int, duration: float) -> Run:
    return lambda target: scenarios.bulk(tools, target, streams, duration)


def connect(tools: Tools, concurrency: int, duration: float) -> Run:
    return lambda target: scenarios.connect(tools, target, concurrency, duration)


# --- running the rounds ----------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One target of a scenario: a proxy (None: straight to a backend), and where its
    numbers go."""

    column: str
    proxy: Proxy | None
    variant: str = ""  # "", "nopersist", "2cores": appended to the metric's key


Run = Callable[[str], Awaitable[Outcome]]  # the scenario, given the target address


class Bench:
    def __init__(
        self,
        settings: Settings,
        tools: Tools,
        work: Path,
        ports: list[int],
        placement: tuple[set[int] | None, set[int] | None, set[int] | None],
    ) -> None:
        self.settings = settings
        self.tools = tools
        self.work = work
        self.sink, self.echo = ports
        self.placement = placement
        self.proxy_core, self.load_core, self.both = placement
        self.record = Recorder(settings.rounds)
        self.notes: dict[str, str] = {}
        self.pinning: dict[str, Any] = {}
        self.appendix: list[str] = []  # where the time goes, in Markdown
        self.profiled: dict[str, Any] = {}  # and its figures, for the JSON
        self.scaled: scale.Scale | None = None
        # The compiled core where it is built (issue 16), beside the Python relay's own column;
        # None: the engine's choice, its Python relay alone.
        self.relay = "core" if proxies.core_imports() else None

    def config(self, vip: str, persistence: bool = True) -> Config:
        return proxies.configuration(vip, (self.sink, self.echo), SERVERS, persistence)

    # --- the proxies that run through every scenario but the idle one ---------------------

    async def steady(self) -> None:
        wanted, d, tools = set(self.settings.scenarios), self.settings.duration, self.tools
        work, core, both = self.work, self.proxy_core, self.both
        vip = [f"{VIPS}{10 + i}" for i in range(6)]
        relay = self.relay
        builtin = proxies.builtin(work / "builtin", vip[0], core, relay=relay)
        haproxy = proxies.haproxy("haproxy", work / "haproxy", vip[1], core)
        big = proxies.haproxy("haproxy-64k", work / "64k", vip[2], core, proxies.BUFSIZE_64K)
        builtin2 = proxies.builtin(work / "builtin2", vip[3], both, workers=2, relay=relay)
        haproxy2 = proxies.haproxy("haproxy", work / "haproxy2", vip[4], both, proxies.NBTHREAD_2)
        python = proxies.builtin(work / "python", vip[5], core, relay="python") if relay else None
        assert builtin is not None  # one worker is always there
        if builtin2 is None:
            self.notes["connect_50__2cores"] = "built-in: workers not available yet"
        running = [p for p in (builtin, haproxy, big, builtin2, haproxy2, python) if p]
        try:
            for proxy in running:
                await proxy.start()
                await proxy.apply(self.config(proxy.vip))
                name = proxy.column + ("-2cores" if proxy.cores == both else "")
                self.pinning[name] = proxy.pinned
            one_core = [Entry("direct", None), Entry("builtin", builtin), Entry("haproxy", haproxy)]
            if python is not None:
                one_core.append(Entry(python.column, python))
            if "bulk" in wanted:
                for streams in (1, 8, 64):
                    print(f"bulk, {streams} stream(s)", flush=True)
                    entries = [*one_core, Entry("haproxy-64k", big)]
                    run = bulk(tools, streams, d)
                    await self.rounds(f"bulk_{streams}", entries, self.sink, run)
            if "connect" in wanted:
                print("new connections, 50 at once", flush=True)
                entries = [*one_core, Entry("haproxy", haproxy2, "2cores")]
                if builtin2 is not None:
                    entries.append(Entry("builtin", builtin2, "2cores"))
                await self.rounds("connect_50", entries, self.echo, connect(tools, 50, d))
            if "serial" in wanted:
                print("one connection at a time", flush=True)
                await self.rounds("serial", one_core, self.echo, connect(tools, 1, d))
            if wanted & {"connect", "serial"}:
                print("persistence off", flush=True)
                for entry in one_core:
                    if entry.proxy is not None:
                        await entry.proxy.apply(self.config(entry.proxy.vip, persistence=False))
                off = [Entry(e.column, e.proxy, "nopersist") for e in one_core]
                if "connect" in wanted:
                    await self.rounds("connect_50", off, self.echo, connect(tools, 50, d))
                if "serial" in wanted:
                    await self.rounds("serial", off, self.echo, connect(tools, 1, d))
        finally:
            for proxy in running:
                with contextlib.suppress(EngineError):
                    await proxy.stop()

    # --- idle connections -------------------------------------------------------------------

    async def idle(self, conns: int) -> None:
        """Each round starts each proxy afresh: memory a process once took is not given back,
        so a second round on the same process would measure less than the first."""
        print(f"{conns:,} idle connections", flush=True)
        columns = ["builtin", "haproxy"] + (["builtin-python"] if self.relay else [])
        for round_ in range(self.settings.rounds):
            turn = round_ % len(columns)
            for column in columns[turn:] + columns[:turn]:
                directory = self.work / f"idle-{round_}-{column}"
                proxy = (
                    proxies.haproxy(column, directory, VIPS + "21", self.proxy_core)
                    if column == "haproxy"
                    else proxies.builtin(
                        directory, VIPS + "20", self.proxy_core,
                        relay="python" if column == "builtin-python" else self.relay,
                    )
                )  # fmt: skip
                assert proxy is not None
                outcome = await self.idle_once(proxy, conns)
                self.keep("idle", round_, Entry(column, proxy), outcome, None)

    async def idle_once(self, proxy: Proxy, conns: int) -> Outcome:
        target = f"{proxy.vip}:{self.echo}"
        await proxy.start()
        try:
            await proxy.apply(self.config(proxy.vip))
            # What the first connections build once (pools, caches) is not per connection.
            await scenarios.connect(self.tools, target, 10, 0.5)
            await asyncio.sleep(PAUSE)
            return await scenarios.idle(
                self.tools, target, conns, self.settings.duration, proxy.pids
            )
        except (BenchError, EngineError) as error:
            return Outcome({}, [f"did not run: {error}"])
        finally:
            await proxy.stop()

    # --- where the time goes ------------------------------------------------------------------

    async def where_time_goes(self) -> None:
        """Each target not met, its scenario once more under perf (see bench.profile)."""
        metrics = self.record.metrics(self.notes)
        unmet = [v for v in verdicts(metrics) if v.met is False]
        if not unmet:
            return
        print("where the time goes, for the targets not met", flush=True)
        chosen: dict[str, tuple[profile.Scenario, list[Verdict]]] = {}
        for found in unmet:
            scenario = profile.scenario_for(found.target)
            if scenario is not None:
                chosen.setdefault(scenario.key, (scenario, []))[1].append(found)
        lines, shown = [profile.HEADING], {}
        if chosen:
            lines += await self.profile_scenarios(list(chosen.values()), shown)
        memory = next((v for v in unmet if v.target.metric == "idle_memory"), None)
        if memory is not None:
            measured = metrics["idle_memory"].values
            medians = {c: s.median for c, v in measured.items() if (s := spread(v))}
            try:
                found = await profile.transport_bytes(TRANSPORTS_MEASURED)
            except BenchError as error:
                lines += ["", f"### memory per idle connection: not measured: {error}"]
            else:
                self.profiled["idle_memory"] = found
                lines += ["", *profile.memory_lines(memory, found, medians, shown)]
        self.appendix = lines

    async def profile_scenarios(
        self, chosen: list[tuple[profile.Scenario, list[Verdict]]], shown: profile.Shown
    ) -> list[str]:
        use_perf = profile.perf_usable()
        builtin = proxies.builtin(
            self.work / "profile-builtin", VIPS + "22", self.proxy_core, relay=self.relay
        )
        haproxy = proxies.haproxy("haproxy", self.work / "profile-haproxy", VIPS + "23",
                                  self.proxy_core)  # fmt: skip
        assert builtin is not None
        running = {"builtin": builtin, "haproxy": haproxy}
        lines: list[str] = []
        try:
            for proxy in running.values():
                await proxy.start()
                await proxy.apply(self.config(proxy.vip))
            for scenario, targets in chosen:
                port, run = self.run_for(scenario.key)
                figures = {}
                try:
                    for column, proxy in running.items():
                        target = f"{proxy.vip}:{port}"
                        figures[column] = await profile.measure(
                            scenario, proxy.pids(), run, target, self.work, use_perf
                        )
                        await asyncio.sleep(PAUSE)
                except (BenchError, EngineError) as error:
                    lines += ["", f"### {scenario.title}: could not be profiled: {error}"]
                    continue
                self.profiled[scenario.key] = {c: f.as_json() for c, f in figures.items()}
                found = profile.Profile(scenario, targets, figures, use_perf)
                lines += ["", *profile.profile_lines(found, shown)]
        finally:
            for proxy in running.values():
                with contextlib.suppress(EngineError):
                    await proxy.stop()
        return lines

    def run_for(self, key: str) -> tuple[int, Run]:
        """The port and the run of a scenario the profile names."""
        duration = self.settings.duration
        if key.startswith("bulk_"):
            return self.sink, bulk(self.tools, int(key.partition("_")[2]), duration)
        return self.echo, connect(self.tools, 50 if key == "connect_50" else 1, duration)

    # --- rounds -----------------------------------------------------------------------------

    async def rounds(self, name: str, entries: list[Entry], port: int, run: Run) -> None:
        for round_ in range(self.settings.rounds):
            turn = round_ % len(entries)
            for entry in entries[turn:] + entries[:turn]:  # nobody always goes first
                await self.one(name, round_, entry, port, run)

    async def one(self, name: str, round_: int, entry: Entry, port: int, run: Run) -> None:
        ip = SERVERS[0] if entry.proxy is None else entry.proxy.vip
        pids = entry.proxy.pids() if entry.proxy else []
        cpu, start, cores = procfs.cpu_seconds(pids), time.monotonic(), procfs.cpu_times()
        try:
            outcome = await run(f"{ip}:{port}")
        except (BenchError, EngineError) as error:
            outcome = Outcome({}, [f"did not run: {error}"])
        wall, spent = time.monotonic() - start, procfs.cpu_seconds(pids) - cpu
        busy = spent / wall * 100 if pids else None
        counted = outcome.raw.get("counted")
        if name.startswith("connect_") and pids and counted:
            # Beside the rate, which the generator may limit: what each connection cost.
            outcome.values[f"cpuconn_{name.partition('_')[2]}"] = spent / counted * 1e6
        after = procfs.cpu_times()
        suffix = f"__{entry.variant}" if entry.variant else ""
        watched = [(LOAD_CORE, "load", self.load_core)]
        if entry.proxy is not None:
            watched.append((PROXY_CORE, "proxy", self.proxy_core))
        for title, short, cpus in watched:
            if cpus is not None:
                found = procfs.busy_percent(cores, after, cpus)
                key = f"{name}{suffix}|{title}"
                self.record.put(self.record.cores, key, entry.column, round_, found)
                outcome.raw[f"{short}_core_busy_percent"] = found
        self.keep(name, round_, entry, outcome, busy)
        await asyncio.sleep(PAUSE)

    def keep(
        self, name: str, round_: int, entry: Entry, outcome: Outcome, busy: float | None
    ) -> None:
        suffix = f"__{entry.variant}" if entry.variant else ""
        record = self.record
        for key, value in outcome.values.items():
            record.put(record.values, key + suffix, entry.column, round_, value)
        if busy is not None:
            record.put(record.busy, name + suffix, entry.column, round_, busy)
        where = f"{name}{suffix} round {round_ + 1} {entry.column}"
        record.problems += [f"{where}: {problem}" for problem in outcome.problems]
        record.runs.append(
            {"scenario": name + suffix, "round": round_ + 1, "column": entry.column,
             "values": outcome.values, "proxy_cpu_percent": busy, "loadgen": outcome.raw}
        )  # fmt: skip
        shown = ", ".join(f"{k} {v:,.1f}" for k, v in outcome.values.items())
        cpu = "" if busy is None else f" (proxy CPU {busy:.0f}%)"
        problems = f"  PROBLEM: {'; '.join(outcome.problems)}" if outcome.problems else ""
        print(f"  {where:<40} {shown}{cpu}{problems}", flush=True)

    def report(self, idle_conns: int, open_files: int) -> Report:
        settings = self.settings
        extra = {
            "machine": machine(),
            "settings": {
                "duration": settings.duration,
                "rounds": settings.rounds,
                "idle_conns": idle_conns,
                "open_files": open_files,
                "proxy_cpus": procfs.format_cpus(self.proxy_core or ()),
                "load_cpus": procfs.format_cpus(self.load_core or ()),
            },
            "pinning": self.pinning,
            "profile": self.profiled,
            "runs": self.record.runs,
        }
        if self.scaled is not None:
            extra["scale"] = self.scaled.as_json()
        return Report(
            self.record.metrics(self.notes),
            describe(
                settings, (self.proxy_core, self.load_core, self.both), open_files, idle_conns
            ),
            self.record.problems,
            len(self.record.runs),
            extra,
            self.appendix,
            scale.markdown(self.scaled) if self.scaled is not None else (),
        )


async def bench(settings: Settings) -> Report:
    placement = cores()  # before this process leaves the proxy's core to the proxies
    load_core = placement[1]
    if load_core is not None:
        os.sched_setaffinity(0, load_core)  # the generator and the backends inherit it
    open_files = raise_open_files(2 * settings.idle_conns + 1024)
    idle_conns = min(settings.idle_conns, (open_files - 512) // 2)
    tools = Tools(settings.build / "loadgen", settings.build / "backends", CLIENTS, CLIENT_COUNT)
    for tool in (tools.loadgen, tools.backends):
        if not os.access(tool, os.X_OK):
            raise BenchError(f"{tool} is missing: `make bench` builds it")
    # Free on every VIP the bench listens on: .10-.21 the rounds', .22 and .23 the profile's.
    ports = free_ports([*(f"{VIPS}{i}" for i in range(10, 24)), *SERVERS], 2)
    # A short directory: engine control sockets must fit in sun_path.
    with tempfile.TemporaryDirectory(prefix="bench-", dir="/tmp") as work:
        run = Bench(settings, tools, Path(work), ports, placement)
        async with backends(tools, ports):
            if set(settings.scenarios) & {"bulk", "connect", "serial"}:
                await run.steady()
            if "idle" in settings.scenarios:
                await run.idle(idle_conns)
            if settings.profile:
                await run.where_time_goes()
        if SCALE in settings.scenarios:
            run.scaled = await scale.scale(Path(work), tools.backends, run.proxy_core)
    return run.report(idle_conns, open_files)


SPAN = f"min{DASH}max"


def describe(
    settings: Settings,
    placement: tuple[set[int] | None, set[int] | None, set[int] | None],
    open_files: int,
    idle_conns: int,
) -> str:
    proxy_core, load_core, both = placement
    found = machine()
    if proxy_core is None or load_core is None or both is None:
        where = "One core: nothing pinned, proxy and generator share it."
    else:
        where = (
            f"Each proxy on CPU {procfs.format_cpus(proxy_core)}, the generator and the "
            f"backends on CPU {procfs.format_cpus(load_core)} (affinity checked in /proc for "
            f"every thread); the two-core variants on CPUs {procfs.format_cpus(both)}"
            + (", sharing one with the generator." if load_core <= both else ".")
        )
    fewer = ""
    if idle_conns < settings.idle_conns:
        fewer = (
            f" Idle: {idle_conns:,} connections, not {settings.idle_conns:,}: the open-files "
            f"limit is {open_files:,} and could not be raised (no CAP_SYS_RESOURCE)."
        )
    return (
        f"{found['date']}, {found['cpu']}, {found['cores']} cores, Linux {found['kernel']}, "
        f"Python {found['python']}, {found['haproxy']}. {where} {settings.rounds} rounds of "
        f"{settings.duration:g} s; each cell is the median ({SPAN}) of the rounds, each ratio "
        f"the median ({SPAN}) of the ratios computed round by round.{fewer}"
    )


def write(report: Report, out: Path) -> None:
    from bench.plot import draw  # matplotlib is slow to import; only here

    out.mkdir(parents=True, exist_ok=True)
    text = markdown(report)
    (out / "latest.md").write_text(text)
    (out / "latest.json").write_text(json.dumps(document(report), indent=1) + "\n")
    written = "latest.md, latest.json"
    if report.metrics:
        draw(report, out / "ratios.png")
        written += ", ratios.png"
    print()
    print(text)
    if report.metrics:
        print("Targets (issues 5 and 16):")
        for found in verdicts(report.metrics):
            print(f"  {found.target.text} {found.target.condition()} {found.target.versus}: "
                  f"{found.text()}")  # fmt: skip
    print(f"\nWritten: {out}/{written}")


def control(settings: Settings) -> tuple[list[str], dict[str, Any]]:
    """The control plane's scenario, before the proxies' pin this process to a core."""
    chosen = control_plane.RunSettings(open_files=raise_open_files(CONTROL_OPEN_FILES))
    if settings.quick:
        chosen = dataclasses.replace(
            chosen, sizes=control_plane.SIZES[:2], repeats=3, growth_budget=20.0, cli_runs=5
        )
    # A short directory: engine control sockets must fit in sun_path.
    with tempfile.TemporaryDirectory(prefix="bench-cp-", dir="/tmp") as work:
        return control_plane.run(Path(work), chosen)


def failover(settings: Settings) -> tuple[list[str], dict[str, Any]]:
    """The HA pair's scenario, before the proxies' pin this process to a core: its failover in
    namespaces, then persistence replication between two engines on loopback."""
    with tempfile.TemporaryDirectory(prefix="bench-ha-", dir="/tmp") as work:
        lines, found = ha.run(Path(work), repeats=2 if settings.quick else ha.REPEATS)
    tools = Tools(settings.build / "loadgen", settings.build / "backends", CLIENTS, CLIENT_COUNT)
    ports = free_ports([*replication.VIPS, *SERVERS], 2)
    with tempfile.TemporaryDirectory(prefix="bench-rep-", dir="/tmp") as work:
        more, replicated = replication.run(
            Path(work), tools, SERVERS, ports[1], lambda: backends(tools, ports)
        )
    return [*lines, "", *more], {**found, "replication": replicated}


def main(settings: Settings) -> int:
    started = time.monotonic()
    lines, found = control(settings) if CONTROL_PLANE in settings.scenarios else ([], {})
    pair_lines, pair_found = failover(settings) if HA in settings.scenarios else ([], {})
    try:
        proxies_chosen = set(settings.scenarios) - {CONTROL_PLANE, HA}
        report = asyncio.run(bench(settings)) if proxies_chosen else Report({}, "")
    except BenchError as error:
        print(f"bench: {error}", file=sys.stderr)
        return 1
    if lines:
        extra = {**report.extra, "control_plane": found}
        report = dataclasses.replace(report, sections=[*lines, *report.sections], extra=extra)
    if pair_lines:
        sections = [*report.sections, *([""] if report.sections else []), *pair_lines]
        extra = {**report.extra, "ha": pair_found}
        report = dataclasses.replace(report, sections=sections, extra=extra)
    write(report, settings.out)
    print(f"Took {time.monotonic() - started:.0f} s.")
    return 0
