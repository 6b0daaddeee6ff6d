"""Scale: the built-in engine and HAProxy at 1,000 virtual services x 10 real servers (issue 11,
item 2). Each engine in turn is given the same configuration (persistence on, one port per
service, TCP-connect checks every 10 s: 1,000 checks a second), its real servers 10 addresses
the C backends listen on, so every check succeeds. Read from /proc: the resident memory of the
engine's processes once the revision is applied and again once checks have run a while, and the
CPU (user + system) they use over a fixed window in which the checks are all they do.

Where the built-in engine misses a target, ``python -m bench.scale where`` runs the engine
process's code in a child process under tracemalloc, sends it the revision as the daemon does
and lets the checks run; the largest allocations are shown by file and line.

``python -m bench.scale`` runs the scenario on its own; ``python -m bench`` runs it with the
rest (``--scenarios scale``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
import tracemalloc
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from balancer.engines import EngineError
from balancer.engines.builtin.process import paths as builtin_paths
from balancer.model import Config
from balancer.validate import parse
from bench import procfs, proxies
from bench.scenarios import BenchError

SERVICES, SERVERS = 1000, 10
CHECK_INTERVAL = 10.0  # seconds: 10,000 real servers checked every 10 s, 1,000 checks a second
SETTLE = 15.0  # seconds after the apply: the first round of checks is over, start-up freed
WINDOW = 20.0  # seconds over which CPU is read: two rounds of checks
MEMORY_AT_MOST, CPU_AT_MOST = 2.0, 3.0  # the built-in engine's ratios to HAProxy
TOP_LINES = 12
BACKENDS = [f"127.6.200.{i + 1}" for i in range(SERVERS)]
VIPS = {"builtin": "127.6", "haproxy": "127.7"}  # 127.6.0.1 ...: one VIP per service


def configuration(prefix: str, port: int) -> dict[str, Any]:
    """``SERVICES`` virtual services on ``prefix``.x.y, each on ``port``, each in front of the
    ``SERVERS`` backends on the same port, as the JSON document the engines are sent."""
    return {
        "virtual_services": [
            {
                "label": f"VS{v}",
                "ip": f"{prefix}.{v // 250}.{v % 250 + 1}",
                "ports": str(port),
                "persistence": {"mode": "source_ip"},
                "health_check": {"type": "connect", "interval": CHECK_INTERVAL},
                "real_servers": [
                    {"label": f"RS{r}", "ip": ip, "port": port} for r, ip in enumerate(BACKENDS)
                ],
            }
            for v in range(SERVICES)
        ]
    }


def rss_kib(pids: list[int]) -> int:
    """Resident memory of ``pids``, summed: each process's own as ``ps`` shows it."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            status = (procfs.PROC / str(pid) / "status").read_text()
            total += int(procfs.field(status, "VmRSS").split()[0])
    return total


@dataclass
class Engine:
    """One engine's figures."""

    column: str
    processes: int = 0
    started_mib: float = 0.0  # right after the apply
    settled_mib: float = 0.0  # after the checks have run SETTLE + WINDOW seconds
    settled_pss_mib: float = 0.0  # the same, pages shared between processes counted once
    cpu_percent: float = 0.0  # of one core, user + system, over WINDOW
    user_percent: float = 0.0
    servers_up: int = 0
    problems: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Scale:
    engines: dict[str, Engine]
    where: list[dict[str, Any]] = field(default_factory=list)  # tracemalloc's top lines
    where_total_mib: float = 0.0

    def ratio(self, what: str) -> float | None:
        builtin, haproxy = self.engines.get("builtin"), self.engines.get("haproxy")
        if builtin is None or haproxy is None:
            return None
        mine, theirs = {
            "memory": (builtin.settled_mib, haproxy.settled_mib),
            "pss": (builtin.settled_pss_mib, haproxy.settled_pss_mib),
            "cpu": (builtin.cpu_percent, haproxy.cpu_percent),
        }[what]
        return mine / theirs if theirs > 0 else None

    def met(self) -> dict[str, bool | None]:
        found: dict[str, bool | None] = {}
        for what, limit in (("memory", MEMORY_AT_MOST), ("cpu", CPU_AT_MOST)):
            ratio = self.ratio(what)
            found[what] = None if ratio is None else ratio <= limit
        return found

    def as_json(self) -> dict[str, Any]:
        return {
            "services": SERVICES,
            "servers_per_service": SERVERS,
            "check_interval": CHECK_INTERVAL,
            "window": WINDOW,
            "engines": {c: e.as_json() for c, e in self.engines.items()},
            "ratios": {w: self.ratio(w) for w in ("memory", "pss", "cpu")},
            "met": self.met(),
            "where": self.where,
        }


# --- running it -----------------------------------------------------------------------------


async def measure_engine(proxy: proxies.Proxy, config: Config) -> Engine:
    found = Engine(proxy.column)
    await proxy.start()
    try:
        await proxy.apply(config)
        pids = proxy.pids()
        found.processes = len(pids)
        found.started_mib = rss_kib(pids) / 1024
        await asyncio.sleep(SETTLE)
        before, start = procfs.cpu_split(pids), time.monotonic()
        await asyncio.sleep(WINDOW)
        after, wall = procfs.cpu_split(pids), time.monotonic() - start
        found.user_percent = (after[0] - before[0]) / wall * 100
        found.cpu_percent = (after[0] + after[1] - before[0] - before[1]) / wall * 100
        pids = proxy.pids()
        found.settled_mib = rss_kib(pids) / 1024
        found.settled_pss_mib = procfs.pss_kib(pids) / 1024
        status = await proxy.engine.status()
        found.servers_up = sum(
            rs.health.value == "up" and rs.reason != "not checked yet"
            for vs in status.virtual_services
            for rs in vs.real_servers
        )
        if found.servers_up != SERVICES * SERVERS:
            found.problems.append(
                f"{found.servers_up:,} of {SERVICES * SERVERS:,} real servers checked and up"
            )
    finally:
        with contextlib.suppress(EngineError):
            await proxy.stop()
    return found


async def where_memory(document: dict[str, Any]) -> tuple[float, list[dict[str, Any]]]:
    """The built-in data plane's allocations by file and line (``main`` below, in a child)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.scale", "where",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate(json.dumps(document).encode())
    if process.returncode != 0:
        raise BenchError(f"bench.scale where: exit {process.returncode}: {err.decode()[-500:]}")
    found = json.loads(out)
    return float(found["total_mib"]), list(found["top"])


@contextlib.asynccontextmanager
async def backends(program: Path) -> AsyncIterator[int]:
    """The C backends on ``BACKENDS``; yields the port the real servers listen on."""
    from bench.run import free_ports  # run imports this module

    sink, echo = free_ports(BACKENDS, 2)
    process = await asyncio.create_subprocess_exec(
        str(program), "--sink-port", str(sink), "--echo-port", str(echo), *BACKENDS,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        if await asyncio.wait_for(process.stdout.readline(), 10) != b"ready\n":
            raise BenchError("the backends did not start")
        yield echo
    finally:
        if process.returncode is None:
            process.terminate()
        await process.wait()


async def scale(work: Path, program: Path, cores: set[int] | None, where: bool = False) -> Scale:
    """Both engines at 1,000 x 10, one after the other, in front of the backends ``program``
    (bench/backends.c). ``where``: also where the built-in engine's memory goes (always, when
    a target is not met)."""
    print(f"{SERVICES:,} services x {SERVERS} real servers, both engines", flush=True)
    async with backends(program) as port:
        return await _scale(work, port, cores, where)


async def _scale(work: Path, backends_port: int, cores: set[int] | None, where: bool) -> Scale:
    engines: dict[str, Engine] = {}
    for column in ("builtin", "haproxy"):
        directory = work / f"scale-{column}"
        vip = f"{VIPS[column]}.0.1"
        proxy = (
            proxies.builtin(directory, vip, cores)
            if column == "builtin"
            else proxies.haproxy(column, directory, vip, cores)
        )
        assert proxy is not None
        config = parse(configuration(VIPS[column], backends_port))
        try:
            engines[column] = found = await measure_engine(proxy, config)
        except (BenchError, EngineError) as error:
            engines[column] = found = Engine(column, problems=[f"did not run: {error}"])
        print(f"  {column:<8} {_line(found)}", flush=True)
    result = Scale(engines)
    if where or False in result.met().values():
        document = configuration(VIPS["builtin"], backends_port)
        result.where_total_mib, result.where = await where_memory(document)
    return result


def _line(found: Engine) -> str:
    problems = f"  PROBLEM: {'; '.join(found.problems)}" if found.problems else ""
    return (
        f"{found.processes} process(es), {found.started_mib:.1f} MiB after the apply, "
        f"{found.settled_mib:.1f} MiB settled, checks {found.cpu_percent:.1f}% of a core "
        f"({found.user_percent:.1f}% user){problems}"
    )


# --- the report -----------------------------------------------------------------------------


def markdown(result: Scale) -> list[str]:
    names = {"builtin": "built-in", "haproxy": "HAProxy"}
    lines = [
        f"## At {SERVICES:,} virtual services {chr(215)} {SERVERS} real servers",
        "",
        f"Persistence on, one port each, a TCP-connect check of every real server every "
        f"{CHECK_INTERVAL:g} s ({SERVICES * SERVERS / CHECK_INTERVAL:,.0f} checks a second), "
        f"nothing else. Resident memory (RSS of every process of the engine) right after the "
        f"apply and {SETTLE + WINDOW:g} s later; CPU (user + system, from /proc) over "
        f"{WINDOW:g} s, {SETTLE:g} s after the apply.",
        "",
        "| engine | processes | RSS after apply | RSS settled | PSS settled | check CPU |",
        "|---|---|---|---|---|---|",
    ]
    for column, found in result.engines.items():
        lines.append(
            f"| {names[column]} | {found.processes} | {found.started_mib:.1f} MiB | "
            f"{found.settled_mib:.1f} MiB | {found.settled_pss_mib:.1f} MiB | "
            f"{found.cpu_percent:.1f}% of a core |"
        )
    lines += ["", "| target | goal | built-in ÷ HAProxy | |", "|---|---|---|---|"]
    met = result.met()
    for what, title, limit in (
        ("memory", "resident memory", MEMORY_AT_MOST),
        ("cpu", "health-check CPU", CPU_AT_MOST),
    ):
        ratio = result.ratio(what)
        shown = "—" if ratio is None else f"{ratio:.2f}"
        state = {None: "not measured", True: "met", False: "**not met**"}[met[what]]
        lines.append(f"| {title} | ≤ {limit:g}{chr(215)} | {shown} | {state} |")
    pss = result.ratio("pss")
    if pss is not None:
        lines += [
            "",
            f"Memory is judged on RSS, as issue 11 measured it. Counting the pages HAProxy's "
            f"master and worker share once (PSS), the built-in engine takes {pss:.2f}{chr(215)} "
            f"HAProxy's.",
        ]
    for found in result.engines.values():
        lines += [f"- {names[found.column]}: {problem}" for problem in found.problems]
    if result.where:
        lines += [
            "",
            f"Where the built-in engine's memory goes: the engine process's code under "
            f"tracemalloc in a child process, sent the revision as the daemon sends it, checks "
            f"running; "
            f"{result.where_total_mib:.1f} MiB traced in all, the largest by file and line:",
            "",
            "| MiB | blocks | where |",
            "|---|---|---|",
            *(
                f"| {line['mib']:.2f} | {line['blocks']:,} | `{line['where']}` |"
                for line in result.where
            ),
        ]
    return lines


def printed(result: Scale) -> str:
    return "\n".join(markdown(result)) + "\n"


# --- where the memory goes: the child -------------------------------------------------------


async def _traced(document: dict[str, Any]) -> dict[str, Any]:
    """The engine process's own code (``process.run``) in this process, sent the revision
    through its control socket as the daemon sends it; only what it allocates is traced (the
    sender's copy of the configuration is made before tracing starts)."""
    from balancer.engines.builtin import process

    config = parse(document)
    del document
    with tempfile.TemporaryDirectory(prefix="scale-where-", dir="/tmp") as work:
        tracemalloc.start(1)
        proxy = proxies.builtin(Path(work), "", None)
        assert proxy is not None
        running = asyncio.get_running_loop().create_task(process.run(Path(work)))
        for _ in range(200):  # until it listens: start() would start another engine
            if builtin_paths(Path(work))[0].exists() or running.done():
                break
            await asyncio.sleep(0.05)
        await proxy.start()
        await proxy.apply(config)
        del config
        await asyncio.sleep(CHECK_INTERVAL + 2)  # every check has run at least once
        snapshot = tracemalloc.take_snapshot()
        tracemalloc.stop()
        await proxy.stop()
        await running
    keep = snapshot.filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
    stats = keep.statistics("lineno")
    root = str(Path(__file__).parent.parent) + os.sep
    top = [
        {
            "mib": stat.size / 2**20,
            "blocks": stat.count,
            "where": f"{frame.filename.removeprefix(root)}:{frame.lineno}",
        }
        for stat in stats[:TOP_LINES]
        for frame in [stat.traceback[0]]
    ]
    return {"total_mib": sum(stat.size for stat in stats) / 2**20, "top": top}


async def _alone(out: Path) -> Scale:
    from bench.run import cores, raise_open_files

    proxy_core, load_core, _ = cores()
    if load_core is not None:
        os.sched_setaffinity(0, load_core)  # the backends inherit it
    raise_open_files(20_000)
    with tempfile.TemporaryDirectory(prefix="scale-", dir="/tmp") as work:
        program = Path(__file__).parent / "build" / "backends"
        result = await scale(Path(work), program, proxy_core, where=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "scale.json").write_text(json.dumps(result.as_json(), indent=1) + "\n")
    return result


def main() -> None:
    if sys.argv[1:] == ["where"]:
        import uvloop

        print(json.dumps(uvloop.run(_traced(json.load(sys.stdin)))))
        return
    result = asyncio.run(_alone(Path(__file__).parent / "results"))
    print()
    print(printed(result))


if __name__ == "__main__":
    main()
