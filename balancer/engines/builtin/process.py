"""The built-in engine's process: a data plane that outlives the management daemon.

It answers on ``engine.sock`` in the data directory (see ``balancer.control``) and keeps
relaying and checking whatever happens to the daemon that started it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import signal
from pathlib import Path
from typing import Any

import uvloop

from balancer import control, logs
from balancer.engines.builtin import message, replication
from balancer.engines.builtin.dataplane import ApplyError, DataPlane
from balancer.engines.builtin.workers import Supervisor, run_worker
from balancer.model import PersistenceMode, VirtualService
from balancer.validate import Invalid

log = logging.getLogger("balancer.engine")


def paths(data_dir: Path) -> tuple[Path, Path, Path]:
    """The engine's control socket, pid file and log in ``data_dir``."""
    return data_dir / "engine.sock", data_dir / "engine.pid", data_dir / "logs" / "engine.log"


async def run(data_dir: Path, workers: int = 1) -> None:
    """The engine: one process, or with ``workers`` above one their supervisor."""
    socket_path, pid_path, _ = paths(data_dir)
    plane: DataPlane | Supervisor
    if workers > 1:
        plane = Supervisor(data_dir, workers)
        await plane.start()
    else:
        plane = DataPlane()
    replicator = replication.Replicator(plane, data_dir)
    if isinstance(plane, Supervisor):
        plane.lost = replicator.again
    stopping = asyncio.Event()
    resumed = False

    async def handle(request: dict[str, Any]) -> dict[str, Any]:
        nonlocal resumed
        op = request.get("op")
        if op == "status":
            return {"ok": True, "status": (await plane.status()).model_dump(mode="json")}
        if op == "apply":
            tables = _sticky(plane.running())
            try:
                await plane.apply(message.received(request, plane.running(), plane.revision))
            except message.Stale as error:
                return {"ok": True, "stale": str(error)}
            except (ApplyError, Invalid) as error:
                log.warning("revision %s rejected: %s", request.get("revision"), error)
                return {"ok": False, "error": str(error)}
            # The peer's entries are kept only for services and servers that run: replication
            # goes on (replication.json) from the first revision, and a table or a server new
            # in a revision asks the peer for its whole table again.
            if not resumed:
                resumed = True
                await replicator.start()
            if _sticky(plane.running()) - tables:
                replicator.again()
            return {"ok": True}
        if op == "configuration":
            return {"ok": True, "configuration": await plane.configuration()}
        if op == "persistence":
            return {"ok": True, "entries": await plane.persistence(str(request["service"]))}
        if op == "clear_persistence":
            return {"ok": True, "cleared": await plane.clear_persistence(str(request["service"]))}
        if op == "replicate":
            try:
                await replicator.configure(replication.settings(request["replication"]))
            except ValueError as error:
                return {"ok": False, "error": f"persistence replication: {error}"}
            return {"ok": True}
        if op == "replication":
            status = await replicator.status()
            return {"ok": True, "replication": status and status.model_dump(mode="json")}
        if op == "workers":
            return {"ok": True, "workers": await plane.workers_status()}
        if op == "stop":
            stopping.set()
            return {"ok": True}
        return {"ok": False, "error": f"unknown op {op!r}"}

    server = await control.serve(socket_path, handle)
    pid_path.write_text(f"{os.getpid()}\n")
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    # What start-up allocated lives as long as the process: keep the collector off it.
    gc.freeze()
    log.info("engine started", extra={"event": "start", "pid": os.getpid(), "workers": workers})
    await stopping.wait()
    log.info("engine stopping", extra={"event": "stop"})
    await server.close()
    await replicator.close()
    await plane.close()
    with contextlib.suppress(FileNotFoundError):
        pid_path.unlink()
    with contextlib.suppress(FileNotFoundError):
        socket_path.unlink()


def _sticky(services: dict[str, VirtualService]) -> set[tuple[str, str]]:
    """Every (service, real server) an entry of the peer may name here, and (service, "") for
    each persistence table: one new in a revision may have been refused before it."""
    return {
        (label, server)
        for label, vs in services.items()
        if vs.persistence.mode is not PersistenceMode.NONE
        for server in ("", *(rs.label for rs in vs.real_servers))
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="balancer-engine", description=__doc__)
    parser.add_argument("--dir", type=Path, required=True, help="the appliance's data directory")
    parser.add_argument("--workers", type=int, default=1, help="engine processes that relay")
    parser.add_argument("--worker", type=int, help="be this worker (started by the supervisor)")
    parser.add_argument("--channel", type=int, help="a worker's socket to its supervisor")
    args = parser.parse_args(argv)
    logs.setup(paths(args.dir)[2], "engine")
    if args.worker is not None:
        uvloop.run(_worker(args.worker, args.workers, args.channel))
    else:
        uvloop.run(run(args.dir, args.workers))


async def _worker(index: int, count: int, channel: int) -> None:
    # As the engine process does: start-up's objects live as long as the worker.
    gc.freeze()
    await run_worker(index, count, channel)
