"""The proxies under test, each run by the appliance's own engine class on the same
configuration: the built-in engine with balancing, persistence, health checks and counters on,
and HAProxy as the HAProxy engine renders it. Each is pinned to its core(s) by starting it
from this process while this process's affinity is those cores (children inherit it)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from balancer.engines import Engine, EngineError
from balancer.engines.builtin import BuiltinEngine
from balancer.engines.builtin.process import paths as builtin_paths
from balancer.engines.haproxy import HaproxyEngine
from balancer.model import Config
from balancer.plan import make
from balancer.validate import parse
from bench import procfs

START_TIMEOUT = 60.0
SETTLE_TIMEOUT = 30.0
CHECK_INTERVAL = 600.0  # seconds: health checks on, and out of the way of the measurements

# HAProxy as issue 5 compares with: one thread (2.6 otherwise starts one per core it may use)
# and default buffers; the variants add to the global section of the engine's own haproxy.cfg.
HAPROXY_BASE = ("nbthread 1",)
BUFSIZE_64K = ("nbthread 1", "tune.bufsize 65536")
NBTHREAD_2 = ("nbthread 2",)


def configuration(
    vip: str, ports: tuple[int, int], servers: list[str], persistence: bool
) -> Config:
    """One TCP virtual service on two ports (a sink and an echo) in front of two real servers
    that listen on the same ports, round robin."""
    return parse(
        {
            "virtual_services": [
                {
                    "label": "bench",
                    "ip": vip,
                    "ports": ",".join(str(p) for p in ports),
                    "balancing": "round_robin",
                    "persistence": {"mode": "source_ip" if persistence else "none"},
                    "health_check": {"type": "connect", "interval": CHECK_INTERVAL},
                    "real_servers": [
                        {"label": f"server{i + 1}", "ip": ip} for i, ip in enumerate(servers)
                    ],
                }
            ]
        }
    )


def builtin_takes_workers() -> bool:
    """Whether the built-in engine can run several processes yet (``workers``)."""
    return "workers" in inspect.signature(BuiltinEngine).parameters


@dataclass
class Proxy:
    column: str  # where its numbers go in the report
    engine: Engine
    vip: str
    cores: set[int] | None  # None: this machine has one core, nothing is pinned
    tuning: tuple[str, ...] = ()  # lines added to haproxy.cfg's global section
    revision: int = 0
    pinned: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, str] = field(default_factory=dict)  # what its processes inherit

    @contextlib.contextmanager
    def _placed(self) -> Iterator[None]:
        """This process on the proxy's cores, with its environment, meanwhile: what it starts
        inherits both, and HAProxy's engine counts the threads it renders for from them."""
        before = os.sched_getaffinity(0)
        variables = {name: os.environ.get(name) for name in self.environment}
        if self.cores is not None:
            os.sched_setaffinity(0, self.cores)
        os.environ.update(self.environment)
        try:
            yield
        finally:
            os.sched_setaffinity(0, before)
            for name, value in variables.items():
                if value is None:
                    del os.environ[name]
                else:
                    os.environ[name] = value

    async def start(self) -> None:
        with self._placed():
            await asyncio.wait_for(self.engine.attach(), START_TIMEOUT)

    async def apply(self, config: Config) -> None:
        self.revision += 1
        # A plan from nothing: the engine makes its own from what it runs. Rendered for one
        # core, HAProxy on two would need more files than its maxconn leaves it.
        with self._placed():
            await self.engine.apply(make(None, config, self.revision, None))
        if isinstance(self.engine, HaproxyEngine):
            if self.tuning:
                await _tune(self.engine, self.tuning)
            await _settled(self.engine)
        self.pinned = self._check_pinning()

    async def stop(self) -> None:
        await self.engine.stop()

    def root(self) -> int:
        engine = self.engine
        if isinstance(engine, HaproxyEngine):
            pid = engine.master.pid()
        else:
            assert isinstance(engine, BuiltinEngine)
            try:
                pid = int(builtin_paths(engine.data_dir)[1].read_text())
            except (OSError, ValueError):
                pid = None
        if pid is None:
            raise EngineError(f"{self.column}: no process found")
        return pid

    def pids(self) -> list[int]:
        return procfs.family(self.root())

    def _check_pinning(self) -> dict[str, Any]:
        """Every thread of every process on the cores asked for, and the open-files limit each
        process got; what was found goes into the report."""
        found: dict[str, Any] = {}
        for pid in self.pids():
            threads = procfs.allowed_cpus(pid)
            cpus = set().union(*threads.values())
            if self.cores is not None and any(c != self.cores for c in threads.values()):
                raise EngineError(
                    f"{self.column}: process {pid} may run on CPUs {procfs.format_cpus(cpus)}, "
                    f"not {procfs.format_cpus(self.cores)}"
                )
            found[str(pid)] = {
                "command": procfs.command(pid)[:120],
                "threads": len(threads),
                "cpus": procfs.format_cpus(cpus),
                "open_files": procfs.open_files_limit(pid),
            }
        return found


def core_imports() -> bool:
    """Whether the built-in engine's compiled relay core is built here (``make setup``)."""
    try:
        importlib.import_module("balancer._relay")
    except ImportError:
        return False
    return True


def builtin(
    directory: Path, vip: str, cores: set[int] | None, workers: int = 1, relay: str | None = None
) -> Proxy | None:
    """The built-in engine, on the relay ``relay`` forces (``BALANCER_RELAY``: python or core;
    None: the engine's own choice); None when ``workers`` is asked of an engine that has none
    yet. The Python relay's numbers go to a column of their own."""
    if workers == 1:
        engine = BuiltinEngine(directory)
    elif builtin_takes_workers():
        engine = BuiltinEngine(directory, workers=workers)  # type: ignore[call-arg,unused-ignore]
    else:
        return None
    column = "builtin-python" if relay == "python" else "builtin"
    return Proxy(column, engine, vip, cores, environment={"BALANCER_RELAY": relay} if relay else {})


def haproxy(
    column: str,
    directory: Path,
    vip: str,
    cores: set[int] | None,
    tuning: tuple[str, ...] = HAPROXY_BASE,
) -> Proxy:
    return Proxy(column, HaproxyEngine(directory), vip, cores, tuning)


async def _tune(engine: HaproxyEngine, lines: tuple[str, ...]) -> None:
    """Add ``lines`` to the global section of the haproxy.cfg the engine just applied, have
    HAProxy check it and reload: the bench's variants, the engine's own rendering untouched."""
    config = engine.paths.config
    text = config.read_text()
    head, found, rest = text.partition("\nglobal\n")
    if not found:
        raise EngineError(f"no global section in {config}")
    candidate = config.with_name("haproxy.cfg.tuned")
    candidate.write_text(head + found + "".join(f"    {line}\n" for line in lines) + rest)
    await engine.master.check(candidate)
    candidate.replace(config)
    after, said = await engine.master.reload()
    if after.failed:
        raise EngineError(f"HAProxy refused {', '.join(lines)}: {said.strip()}")


async def _settled(engine: HaproxyEngine) -> None:
    """Wait until the workers of earlier reloads are gone: they would count in the numbers."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SETTLE_TIMEOUT
    while (await engine.master.processes()).old:
        if loop.time() > deadline:
            raise EngineError("HAProxy's old workers did not finish")
        await asyncio.sleep(0.1)
