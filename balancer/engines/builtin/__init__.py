"""The built-in engine, as the management daemon sees it: a process it starts once and then
talks to over the control socket. The process is in its own session, so stopping or restarting
the daemon leaves it, and every connection it relays, running. With ``workers`` above one that
process is the supervisor of as many relaying processes (see ``workers``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from balancer import control
from balancer.engines import EngineError, EngineRejected, Replication
from balancer.engines.builtin import message
from balancer.engines.builtin.process import paths
from balancer.engines.builtin.replication import dump_settings as replication_settings
from balancer.model import Config
from balancer.plan import Plan
from balancer.state import EngineStatus, ReplicationStatus
from balancer.validate import Problem

log = logging.getLogger("balancer.engine")

START_TIMEOUT = 15.0
ASK_AGAIN = 0.2


class BuiltinEngine:
    name = "builtin"

    def __init__(self, data_dir: Path, workers: int = 1) -> None:
        self.data_dir = data_dir
        self.workers = workers
        self.socket, self.pid_file, self.log_file = paths(data_dir)
        self._child: subprocess.Popen[bytes] | None = None

    async def attach(self) -> int | None:
        # An engine of this directory that is alive but busy (ten thousand health verdicts at
        # once) is waited for: a second one beside it could have none of its ports.
        found = await self._found(START_TIMEOUT if self._pid() is not None else 0.0)
        if found is not None:
            revision, running = found
            if running == self.workers:
                return revision
            # Another number of workers needs other socket groups: the engine starts afresh.
            log.warning(
                "the engine runs %s workers and %s are wanted: restarting it",
                running,
                self.workers,
                extra={"event": "workers", "workers": self.workers},
            )
        if self._pid() is not None:
            await self.stop()
        output = self.log_file.parent / "engine.out"
        said_from = output.stat().st_size if output.exists() else 0
        self._spawn(output)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT
        while True:
            try:
                return (await self.status()).revision
            except EngineError:
                if self._child is not None and self._child.poll() is not None:
                    raise EngineError(
                        f"the engine exited with status {self._child.returncode}"
                        f"{_last_words(output, said_from)}; see {output}"
                    ) from None
                if loop.time() > deadline:
                    raise
                await asyncio.sleep(0.05)

    async def _found(self, patience: float) -> tuple[int | None, int] | None:
        """The revision and the number of workers of the engine that answers, asking for
        ``patience`` seconds; None if none does."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + patience
        while True:
            try:
                return (await self.status()).revision, len(await self.worker_status())
            except EngineError:
                if loop.time() >= deadline:
                    return None
                await asyncio.sleep(ASK_AGAIN)

    def _spawn(self, output: Path) -> None:
        output.parent.mkdir(parents=True, exist_ok=True)
        with output.open("ab") as out:
            self._child = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "balancer.engines.builtin",
                    "--dir",
                    str(self.data_dir),
                    "--workers",
                    str(self.workers),
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )

    async def _request(self, message: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
        try:
            return await control.request(self.socket, message, timeout)
        except control.ControlError as error:
            raise EngineError(str(error)) from None

    def problems(self, config: Config, before: Config) -> list[Problem]:
        """Nothing the built-in engine runs is limited but by the connections it relays."""
        return []

    async def apply(self, plan: Plan) -> None:
        """Send what ``plan`` changes; the whole configuration only to an engine that runs
        another revision than the plan starts from (it makes its own plan from what runs)."""
        reply = await self._apply(message.changes(plan))
        if "stale" in reply:
            log.info("%s: sending the whole configuration", reply["stale"])
            await self._apply(message.whole(plan.config, plan.revision))

    async def _apply(self, request: dict[str, Any]) -> dict[str, Any]:
        try:
            return await control.request(self.socket, request, timeout=60.0)
        except control.ControlError as error:
            if not self.socket.exists():
                raise EngineError(str(error)) from None
            raise EngineRejected(str(error)) from None

    async def status(self) -> EngineStatus:
        reply = await self._request({"op": "status"}, timeout=5.0)
        return EngineStatus.model_validate(reply["status"])

    async def configuration(self) -> str:
        """The built-in engine runs the model itself: its revision as a JSON document."""
        reply = await self._request({"op": "configuration"})
        return str(reply["configuration"])

    async def persistence(self, service: str) -> list[dict[str, Any]]:
        reply = await self._request({"op": "persistence", "service": service})
        return list(reply["entries"])

    async def clear_persistence(self, service: str) -> int:
        reply = await self._request({"op": "clear_persistence", "service": service})
        return int(reply["cleared"])

    async def replicate(self, replication: Replication | None) -> None:
        """The engine keeps it in its directory (``replication.json``) and goes on with it
        whenever it starts again."""
        settings = None if replication is None else replication_settings(replication)
        try:
            await control.request(self.socket, {"op": "replicate", "replication": settings})
        except control.ControlError as error:
            raise EngineError(str(error)) from None

    async def replication(self) -> ReplicationStatus | None:
        reply = await self._request({"op": "replication"}, timeout=10.0)
        found = reply["replication"]
        return None if found is None else ReplicationStatus.model_validate(found)

    async def worker_status(self) -> list[dict[str, Any]]:
        """Each worker's index, pid and own status (its counters); None while restarting."""
        reply = await self._request({"op": "workers"})
        return list(reply["workers"])

    async def detach(self) -> None:
        self._child = None

    async def stop(self) -> None:
        with contextlib.suppress(EngineError):
            await self._request({"op": "stop"})
        pid = self._pid()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10.0
        while pid is not None and _alive(pid) and loop.time() < deadline:
            if self._child is not None:
                self._child.poll()
            await asyncio.sleep(0.05)
        if pid is not None and _alive(pid):
            os.kill(pid, signal.SIGKILL)
        self._child = None

    def _pid(self) -> int | None:
        """The engine's pid: a stale pid file may name some other process by now."""
        if self._child is not None:
            if self._child.poll() is None:
                return self._child.pid
            self._child = None  # it has exited, and is reaped now
        try:
            pid = int(self.pid_file.read_text())
            command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return None
        ours = b"balancer.engines.builtin" in command and str(self.data_dir).encode() in command
        return pid if ours else None


def _last_words(output: Path, offset: int) -> str:
    """The last line the engine wrote to ``output`` before it died (a traceback's ends with
    the error itself), as ': <line>'; empty if it said nothing."""
    with contextlib.suppress(OSError), output.open("rb") as file:
        file.seek(offset)
        lines = file.read().decode(errors="replace").strip().splitlines()
        if lines:
            return f": {lines[-1].strip()}"
    return ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
