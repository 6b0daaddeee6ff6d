"""HAProxy's master process and its CLI: the only door to the running HAProxy.

The master runs in its own session, so the daemon that started it can stop, restart or crash
while it, its workers and every connection they relay carry on. Commands for a worker go
through the master (``@1 ...``); see ``runtime`` for what is sent and how replies are read.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from balancer.engines import EngineError, EngineRejected
from balancer.engines.haproxy import runtime
from balancer.engines.haproxy.paths import Paths

START_TIMEOUT = 15.0
RELOAD_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
CLI_TIMEOUT = 10.0
POLL = 0.05


class Master:
    def __init__(self, paths: Paths, binary: str) -> None:
        self.paths = paths
        self.binary = binary
        self._child: subprocess.Popen[bytes] | None = None

    async def cli(self, command: str, timeout: float = CLI_TIMEOUT) -> str:
        """One line of commands on the master CLI, and the whole reply."""
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_unix_connection(self.paths.master_socket)
                try:
                    writer.write(command.encode() + b"\n")
                    writer.write_eof()
                    reply = await reader.read()
                finally:
                    writer.close()
                    with contextlib.suppress(ConnectionError):
                        await writer.wait_closed()
        except (OSError, TimeoutError) as error:
            raise EngineError(
                f"HAProxy's master CLI {self.paths.master_socket} did not answer: "
                f"{error or type(error).__name__}"
            ) from None
        return reply.decode(errors="replace")

    async def send(self, commands: list[str]) -> bool:
        """Commands for the current worker; False if HAProxy answered one with an error."""
        replies = [await self.cli(line) for line in runtime.batches(commands)]
        return not any(runtime.command_failed(reply) for reply in replies)

    async def processes(self) -> runtime.Processes:
        try:
            return runtime.parse_proc(await self.cli("show proc"))
        except ValueError as error:
            raise EngineError(str(error)) from None

    async def check(self, config: Path) -> None:
        """``haproxy -c``; EngineRejected with HAProxy's alerts if it refuses ``config``."""
        checked = await asyncio.create_subprocess_exec(
            self.binary,
            "-c",
            "-f",
            str(config),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        output, _ = await checked.communicate()
        if checked.returncode != 0:
            found = runtime.alerts(output.decode(errors="replace"))
            raise EngineRejected(runtime.rejection(found))

    async def start(self) -> None:
        """Start the master on ``paths.config``; return once its first worker runs."""
        paths = self.paths
        offset = _size(paths.output)
        child = self._child = self._spawn()
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            with contextlib.suppress(EngineError):
                if (await self.processes()).current is not None:
                    return
            if child.poll() is not None or time.monotonic() > deadline:
                found = runtime.alerts(_read_from(paths.output, offset))
                raise EngineError(f"HAProxy did not start: {'; '.join(found) or 'no reason'}")
            await asyncio.sleep(POLL)

    def _spawn(self) -> subprocess.Popen[bytes]:
        paths = self.paths
        command = [self.binary, "-W", "-S", f"{paths.master_socket},mode,600"]
        command += ["-f", str(paths.config), "-p", str(paths.pid_file)]
        with paths.log.open("ab") as log, paths.output.open("ab") as output:
            return subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,  # the workers' log lines (``log stdout``)
                stderr=output,
                start_new_session=True,
            )

    async def reload(self) -> tuple[runtime.Processes, str]:
        """Have the master reload ``paths.config``; return the processes after the reload and
        what the master said meanwhile. A reload that fails leaves the old worker current."""
        before = await self.processes()
        offset = _size(self.paths.output)
        with contextlib.suppress(EngineError):
            await self.cli("reload")  # the master closes the connection as it reloads
        deadline = time.monotonic() + RELOAD_TIMEOUT
        while time.monotonic() < deadline:
            with contextlib.suppress(EngineError):
                after = await self.processes()
                if after.reloads > before.reloads:
                    return after, _read_from(self.paths.output, offset)
            await asyncio.sleep(POLL)
        raise EngineError(f"HAProxy did not finish reloading in {RELOAD_TIMEOUT}s")

    def forget(self) -> None:
        """Leave the master running on its own (the daemon is restarting)."""
        self._child = None

    async def stop(self) -> None:
        """Stop the master; its workers, and the connections they relay, end with it."""
        pid = self.pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            for _ in range(int(STOP_TIMEOUT / POLL)):
                if not self._alive(pid):
                    break
                await asyncio.sleep(POLL)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)  # its own session: only what it started
            if self._child is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._child.wait(timeout=5)
        self._child = None
        for path in (self.paths.master_socket, self.paths.pid_file):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def pid(self) -> int | None:
        """The master's pid; a stale pid file may name some other process by now."""
        if self._child is not None:
            return self._child.pid
        try:
            pid = int(self.paths.pid_file.read_text().split()[0])
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            return None
        return pid if str(self.paths.master_socket).encode() in command else None

    def _alive(self, pid: int) -> bool:
        if self._child is not None:
            return self._child.poll() is None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _read_from(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as file:
            file.seek(offset)
            return file.read().decode(errors="replace")
    except FileNotFoundError:
        return ""
