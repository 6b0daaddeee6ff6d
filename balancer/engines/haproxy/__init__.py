"""The HAProxy engine: Debian's haproxy in master-worker mode, driven through its master CLI.

The master runs in its own session, so stopping or restarting the daemon leaves it, and every
connection it relays, running. A commit renders haproxy.cfg, has ``haproxy -c`` check it, then
either changes real servers at runtime (weight, drain, halt, connection cap) or reloads: the
master starts a new worker on the same listening sockets and the old one finishes its
connections. A configuration HAProxy refuses, at the check or at the reload, changes nothing
that runs; the commit fails with HAProxy's own words.

Files are in ``<data dir>/haproxy/`` (see ``Paths``); ``running.json`` holds the model the
workers run and its revision, with the revision of the last reload, which the current worker
reports itself (``setenv BALANCER_REVISION``): a daemon that attaches trusts the file only when
the two agree.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from balancer import plan
from balancer.engines import EngineError, EngineRejected
from balancer.engines.haproxy import runtime
from balancer.engines.haproxy.paths import Paths
from balancer.engines.haproxy.render import render
from balancer.engines.haproxy.status import engine_status
from balancer.model import Config, PersistenceMode, VirtualService
from balancer.state import EngineStatus
from balancer.validate import parse

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
START_TIMEOUT = 15.0
RELOAD_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
# A new worker waits this long for the tables of the old one before it is told none will come.
SYNC_TIMEOUT = 6.0
CLI_TIMEOUT = 10.0
POLL = 0.05


class HaproxyEngine:
    name = "haproxy"

    def __init__(self, data_dir: Path, binary: str = HAPROXY) -> None:
        self.paths = Paths(data_dir)
        self.binary = binary
        self._running: Config | None = None
        self._revision: int | None = None
        self._reloaded: int | None = None  # the revision of the last reload
        self._started: dict[int, float] = {}  # worker pid -> when it started
        self._child: subprocess.Popen[bytes] | None = None

    # --- the master CLI -----------------------------------------------------------------------

    async def _cli(self, command: str, timeout: float = CLI_TIMEOUT) -> str:
        """One command on the master CLI, and its whole reply."""
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

    async def _processes(self) -> runtime.Processes:
        try:
            return runtime.parse_proc(await self._cli("show proc"))
        except ValueError as error:
            raise EngineError(str(error)) from None

    # --- attach, start, stop ------------------------------------------------------------------

    async def attach(self) -> int | None:
        with contextlib.suppress(EngineError):
            if (await self._processes()).current is not None:
                return await self._adopt()
        await self._start()
        return None

    async def _adopt(self) -> int | None:
        """Take over a running HAProxy: its model and revision, if the worker confirms them."""
        reported = runtime.parse_revision(await self._cli(runtime.show_revision()))
        try:
            saved = json.loads(self.paths.running.read_text())
            config = parse(saved["config"])
        except (OSError, ValueError, KeyError):
            return None
        if reported is None or saved.get("reloaded") != reported:
            return None  # a commit was cut short: the controller applies its revision again
        self._running, self._revision, self._reloaded = config, saved["revision"], reported
        return self._revision

    async def _start(self) -> None:
        """Start the master with a configuration that binds nothing; commits fill it in."""
        paths = self.paths
        paths.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        paths.log.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            paths.running.unlink()
        _write(paths.config, render(Config(), paths))
        self._running = self._revision = self._reloaded = None
        offset = _size(paths.output)
        child = self._child = self._spawn()
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            with contextlib.suppress(EngineError):
                if (await self._processes()).current is not None:
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
                stdout=log,
                stderr=output,
                start_new_session=True,
            )

    async def detach(self) -> None:
        self._child = None

    async def stop(self) -> None:
        """Stop the master and its workers (established connections end with them)."""
        pid = self._master_pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            for _ in range(int(STOP_TIMEOUT / POLL)):
                if not _alive(pid, self._child):
                    break
                await asyncio.sleep(POLL)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)  # its own session: only what it started
            if self._child is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._child.wait(timeout=5)
        self._child = None
        self._running = self._revision = self._reloaded = None
        for path in (self.paths.running, self.paths.master_socket, self.paths.pid_file):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def _master_pid(self) -> int | None:
        """The master's pid; a stale pid file may name some other process by now."""
        if self._child is not None:
            return self._child.pid
        try:
            pid = int(self.paths.pid_file.read_text().split()[0])
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            return None
        return pid if str(self.paths.master_socket).encode() in command else None

    # --- apply ----------------------------------------------------------------------------------

    async def apply(self, config: Config, revision: int) -> None:
        paths = self.paths
        candidate = paths.directory / "haproxy.cfg.new"
        _write(candidate, render(config, paths, revision))
        checked = await asyncio.create_subprocess_exec(
            self.binary,
            "-c",
            "-f",
            str(candidate),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        output, _ = await checked.communicate()
        if checked.returncode != 0:
            candidate.unlink()
            raise EngineRejected(runtime.rejection(runtime.alerts(output.decode(errors="replace"))))
        running = self._running
        if (
            running is not None
            and not plan.needs_reload(plan.changes(running, config))
            and await self._change_at_runtime(running, config)
        ):
            candidate.replace(paths.config)  # it says what runs now
            self._record(config, revision, self._reloaded)
            return
        await self._reload(config, revision, candidate)

    async def _change_at_runtime(self, running: Config, config: Config) -> bool:
        """Weights, states and caps through the Runtime API; False if HAProxy refused one (a
        reload then makes everything as the configuration says)."""
        return await self._send(runtime.runtime_commands(running, config))

    async def _send(self, commands: list[str]) -> bool:
        """Commands for the current worker; False if HAProxy answered one with an error."""
        replies = [await self._cli(line) for line in runtime.batches(commands)]
        return not any(runtime.command_failed(reply) for reply in replies)

    async def _reload(self, config: Config, revision: int, candidate: Path) -> None:
        paths = self.paths
        running = self._running or Config()
        kept = await self._tables_to_carry(running, config)
        carried = runtime.carried_state(
            await self._cli(runtime.worker(None, "show servers state")), running, config
        )
        _write(paths.state_file, carried)
        before = await self._processes()
        previous = paths.config.read_text()
        offset = _size(paths.output)
        candidate.replace(paths.config)
        with contextlib.suppress(EngineError):
            await self._cli("reload")  # the master closes the connection as it reloads
        after = await self._reloaded_processes(before)
        if after.current == before.current or after.failed:
            # The master kept the old worker running; put its configuration back in place.
            _write(paths.config, previous)
            found = runtime.alerts(_read_from(paths.output, offset))
            raise EngineRejected(runtime.rejection(found))
        if kept is None:
            await self._synced()  # the old worker teaches the new one every entry it has
        elif kept:
            await self._restore(kept)
        self._record(config, revision, revision)

    async def _tables_to_carry(
        self, running: Config, config: Config
    ) -> dict[str, list[runtime.StickEntry]] | None:
        """Persistence entries the engine must copy to the next worker itself: those of a
        worker that HAProxy's peers would not hand over yet (see ``runtime.peers_synced``).
        None when HAProxy hands them over itself."""
        labels = [
            vs.label
            for vs in config.virtual_services
            if vs.persistence.mode is not PersistenceMode.NONE
            and (before := running.virtual_service(vs.label)) is not None
            and before.persistence.mode is not PersistenceMode.NONE
            and before.ip.version == vs.ip.version
        ]
        if not labels:
            return {}
        if runtime.peers_synced(await self._cli(runtime.worker(None, "show peers"))):
            return None
        return {label: await self._table(running, label) for label in labels}

    async def _restore(self, kept: dict[str, list[runtime.StickEntry]]) -> None:
        ids = runtime.server_ids(await self._cli(runtime.worker(None, "show servers state")))
        for label, entries in kept.items():
            servers = {server: id_ for (service, server), id_ in ids.items() if service == label}
            await self._send(runtime.restore(label, entries, servers))

    async def _reloaded_processes(self, before: runtime.Processes) -> runtime.Processes:
        deadline = time.monotonic() + RELOAD_TIMEOUT
        while time.monotonic() < deadline:
            with contextlib.suppress(EngineError):
                after = await self._processes()
                if after.reloads > before.reloads:
                    return after
            await asyncio.sleep(POLL)
        raise EngineError(f"HAProxy did not finish reloading in {RELOAD_TIMEOUT}s")

    async def _synced(self) -> None:
        """Wait, a bounded time, until the current worker has its stick tables."""
        deadline = time.monotonic() + SYNC_TIMEOUT
        while time.monotonic() < deadline:
            if runtime.peers_synced(await self._cli(runtime.worker(None, "show peers"))):
                return
            await asyncio.sleep(POLL)

    def _record(self, config: Config, revision: int, reloaded: int | None) -> None:
        document = {
            "revision": revision,
            "reloaded": reloaded,
            "config": config.model_dump(mode="json"),
        }
        _write(self.paths.running, json.dumps(document))
        self._running, self._revision, self._reloaded = config, revision, reloaded

    # --- what runs ------------------------------------------------------------------------------

    async def status(self) -> EngineStatus:
        processes = await self._processes()
        current = processes.current
        if current is None:
            raise EngineError("HAProxy's master runs no worker")
        replies = await asyncio.gather(
            self._cli(runtime.worker(None, "show stat")),
            *(self._cli(runtime.worker(pid, "show stat")) for pid in processes.old),
            return_exceptions=True,
        )
        if isinstance(replies[0], BaseException):
            raise replies[0]
        workers = [runtime.parse_stat(r) for r in replies if isinstance(r, str)]
        started = self._started.setdefault(current, time.time() - processes.uptime)
        return engine_status(self._running or Config(), self._revision, current, started, workers)

    async def configuration(self) -> str:
        try:
            return self.paths.config.read_text()
        except OSError as error:
            raise EngineError(f"no haproxy.cfg: {error}") from None

    def _service(self, label: str) -> VirtualService:
        vs = self._running.virtual_service(label) if self._running is not None else None
        if vs is None:
            raise EngineError(f"virtual service {label!r} is not running")
        return vs

    async def _table(self, config: Config, label: str) -> list[runtime.StickEntry]:
        vs = config.virtual_service(label)
        if vs is None or vs.persistence.mode is PersistenceMode.NONE:
            return []
        ids = runtime.server_ids(await self._cli(runtime.worker(None, "show servers state")))
        names = {id_: server for (service, server), id_ in ids.items() if service == label}
        reply = await self._cli(runtime.worker(None, f"show table {label}"))
        return runtime.parse_table(reply, names)

    async def persistence(self, service: str) -> list[dict[str, Any]]:
        vs = self._service(service)
        timeout = vs.persistence.timeout
        return [
            {
                "client": entry.client,
                "server": entry.server,
                # A connection holds its entry; the timeout starts when it ends.
                "expires_in": round(timeout if entry.in_use else entry.expires_in, 1),
            }
            for entry in await self._table(self._running or Config(), vs.label)
            if entry.server is not None
        ]

    async def clear_persistence(self, service: str) -> int:
        vs = self._service(service)
        entries = await self._table(self._running or Config(), vs.label)
        if not entries:
            return 0
        await self._send(runtime.forget(vs.label, entries))
        return sum(1 for entry in entries if entry.server is not None)


def _write(path: Path, text: str) -> None:
    """Write ``path`` whole or not at all: a reader never sees half a file."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    partial.replace(path)


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


def _alive(pid: int, child: subprocess.Popen[bytes] | None) -> bool:
    if child is not None:
        return child.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
