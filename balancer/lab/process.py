"""The lab process: several simulated PSM servers and a control socket to switch their modes.

Control requests, one JSON object per line on ``<lab dir>/lab.sock`` (``balancer.control``):

- ``{"op": "status"}`` → ``{"ok": true, "servers": {"PSM1": {"ip", "rdp_port", "https_port",
  "mode", "connections": {"rdp": {"active", "total"}, "https": {"active", "total"}}}}}``
- ``{"op": "set", "server": "PSM1", "mode": "fail"}`` → ``{"ok": true, "server": {...}}``
- ``{"op": "stop"}`` → ``{"ok": true}``, then the lab stops.

The control socket answers once every server listens: a status reply means the lab is ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from pathlib import Path
from typing import Any

import uvloop

from balancer import control
from balancer.certificates import server_context
from balancer.lab.server import LabServer, LabServerSpec, Mode

log = logging.getLogger(__name__)

SOCKET = "lab.sock"
PID_FILE = "lab.pid"
FIRST_HOST = 105  # PSM1 is 127.94.0.105, as the guide's PSM1 is 192.168.94.105


def default_specs(count: int, privileged: bool) -> list[LabServerSpec]:
    """PSM1, PSM2, ... on 127.94.0.105, .106, ...; privileged: the real ports 3389 and 443."""
    if not 1 <= count <= 255 - FIRST_HOST:
        raise ValueError(f"servers: {count} is not between 1 and {255 - FIRST_HOST}")
    rdp_port, https_port = (3389, 443) if privileged else (13389, 10443)
    return [
        LabServerSpec(f"PSM{n}", f"127.94.0.{FIRST_HOST - 1 + n}", rdp_port, https_port)
        for n in range(1, count + 1)
    ]


async def run_lab(servers: list[LabServerSpec], lab_dir: Path) -> None:
    """Run ``servers`` until a stop request or until cancelled; either way clean up."""
    names = [spec.name for spec in servers]
    if len(set(names)) != len(names):
        raise ValueError(f"servers: names repeat in {names}")
    lab_dir.mkdir(parents=True, exist_ok=True)
    lab = {
        spec.name: LabServer(spec, server_context(lab_dir / f"{spec.name}.pem", spec.name))
        for spec in servers
    }
    stopping = asyncio.Event()

    async def answer(request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        if op == "status":
            return {"ok": True, "servers": {name: s.status() for name, s in lab.items()}}
        if op == "set":
            server = lab.get(str(request.get("server")))
            if server is None:
                known = ", ".join(lab)
                raise ValueError(f"server: {request.get('server')!r} is not in the lab ({known})")
            await server.set_mode(_mode(request.get("mode")))
            return {"ok": True, "server": server.status()}
        if op == "stop":
            stopping.set()
            return {"ok": True}
        raise ValueError(f"op: {op!r} is not one of status, set, stop")

    async with contextlib.AsyncExitStack() as stack:
        for server in lab.values():
            await server.start()
            stack.push_async_callback(server.stop)
        path = lab_dir / SOCKET
        stack.callback(path.unlink, missing_ok=True)
        stack.push_async_callback((await control.serve(path, answer)).close)
        log.info("lab ready: %s", path)
        await stopping.wait()


def run(specs: list[LabServerSpec], lab_dir: Path) -> None:
    """Run the lab with uvloop until a stop request, SIGTERM or SIGINT, with a pid file."""
    lab_dir.mkdir(parents=True, exist_ok=True)
    pid_file = lab_dir / PID_FILE
    # A second lab would take over the control socket, and its pid file would hide the first.
    if (pid := _running(pid_file)) is not None:
        raise FileExistsError(f"{pid_file}: a lab already runs here (pid {pid})")
    pid_file.write_text(f"{os.getpid()}\n")
    try:
        uvloop.run(_until_signalled(specs, lab_dir))
    finally:
        pid_file.unlink(missing_ok=True)


async def lab_status(lab_dir: Path) -> dict[str, dict[str, Any]]:
    """Each server's status by name, as the ``status`` request answers it."""
    reply = await control.request(lab_dir / SOCKET, {"op": "status"})
    servers: dict[str, dict[str, Any]] = reply["servers"]
    return servers


async def set_mode(lab_dir: Path, server: str, mode: str) -> None:
    await control.request(lab_dir / SOCKET, {"op": "set", "server": server, "mode": mode})


async def stop_lab(lab_dir: Path) -> None:
    await control.request(lab_dir / SOCKET, {"op": "stop"})


async def _until_signalled(specs: list[LabServerSpec], lab_dir: Path) -> None:
    lab = asyncio.create_task(run_lab(specs, lab_dir))
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, lab.cancel)
    await asyncio.wait([lab])
    # A signal is a normal way to stop; anything else that ended the lab is raised.
    if not lab.cancelled():
        lab.result()


def _running(pid_file: Path) -> int | None:
    """The pid in ``pid_file`` if that process is alive."""
    try:
        pid = int(pid_file.read_text())
    except (FileNotFoundError, ValueError):
        return None
    try:
        os.kill(pid, 0)  # signal 0 only asks whether the process exists
    except ProcessLookupError:
        return None
    except PermissionError:  # it exists, and is someone else's
        return pid
    return pid


def _mode(value: object) -> Mode:
    try:
        return Mode(str(value))
    except ValueError:
        raise ValueError(f"mode: {value!r} is not one of {', '.join(Mode)}") from None
