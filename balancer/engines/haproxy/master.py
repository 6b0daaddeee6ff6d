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

from balancer import tool
from balancer.engines import EngineError, EngineRejected
from balancer.engines.haproxy import runtime
from balancer.engines.haproxy.paths import Paths

START_TIMEOUT = 15.0
RELOAD_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
CLI_TIMEOUT = 10.0
CHECK_TIMEOUT = 60.0
POLL = 0.05


class Master:
    def __init__(self, paths: Paths, binary: str) -> None:
        self.paths = paths
        self.binary = binary

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
        try:
            status, output = await tool.run([self.binary, "-c", "-f", str(config)], CHECK_TIMEOUT)
        except TimeoutError:
            raise EngineError(f"haproxy -c did not finish in {CHECK_TIMEOUT}s") from None
        if status != 0:
            found = runtime.alerts(output)
            raise EngineRejected(runtime.rejection(found))

    async def start(self) -> None:
        """Start the master on ``paths.config``; return once its first worker runs."""
        paths = self.paths
        offset = _size(paths.output)
        paths.pid_file.unlink(missing_ok=True)
        self._spawn()
        for _ in range(int(START_TIMEOUT / POLL)):
            with contextlib.suppress(EngineError):
                if (await self.processes()).current is not None:
                    return
            found = runtime.alerts(_read_from(paths.output, offset))
            if found:
                raise EngineError(f"HAProxy did not start: {'; '.join(found)}")
            await asyncio.sleep(POLL)
        raise EngineError(f"HAProxy did not start in {START_TIMEOUT}s; see {paths.output}")

    def _spawn(self) -> None:
        """Start the master through a shell that leaves it running and exits: the master is
        then no child of this process, which neither has to reap it nor takes it along."""
        paths = self.paths
        command = [self.binary, "-W", "-S", f"{paths.master_socket},mode,600"]
        command += ["-f", str(paths.config), "-p", str(paths.pid_file)]
        with paths.log.open("ab") as log, paths.output.open("ab") as output:
            shell = subprocess.Popen(
                ["/bin/sh", "-c", '"$@" &', "sh", *command],
                stdin=subprocess.DEVNULL,
                stdout=log,  # the workers' log lines (``log stdout``)
                stderr=output,
                start_new_session=True,
            )
        shell.wait(timeout=START_TIMEOUT)

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

    async def stop(self) -> None:
        """Stop the master; its workers, and the connections they relay, end with it."""
        pid = self.pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                group = os.getpgid(pid)  # its own session: only what it started
                os.kill(pid, signal.SIGTERM)
                await _gone(pid)
                os.killpg(group, signal.SIGKILL)  # workers it could not stop in time
        for path in (self.paths.master_socket, self.paths.pid_file):
            path.unlink(missing_ok=True)

    def pid(self) -> int | None:
        """The master's pid; a stale pid file may name some other process by now."""
        try:
            pid = int(self.paths.pid_file.read_text().split()[0])
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            return None
        return pid if str(self.paths.master_socket).encode() in command else None


async def _gone(pid: int) -> None:
    """Wait, a bounded time, until process ``pid`` has ended."""
    for _ in range(int(STOP_TIMEOUT / POLL)):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        await asyncio.sleep(POLL)


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
