"""Workers: ``workers = N`` runs N engine processes sharing the listening sockets, so the data
plane uses every core.

The supervisor is the engine process the daemon knows (``engine.sock``, ``engine.pid``). It
binds every listening socket, a group of N per VIP and port (see ``listeners``), and hands
worker ``i`` the ``i``-th of each; a client's source address picks its worker, always the same
one, so each worker's persistence table is right on its own. The supervisor runs the health
checks, once, and tells every worker what they find; it applies each revision to every worker
and answers status (the workers' counters summed), persistence (their tables together) and
clear. A worker that exits is started again and given the running revision, the health and its
sockets, which the supervisor kept open: clients meanwhile wait in the listen queue, and the
order of the socket groups, so each client's worker, is unchanged.

Supervisor and worker talk over a socket pair: JSON lines, the first of which may carry file
descriptors (SCM_RIGHTS), one request and its reply at a time.

Persistence replication runs in the supervisor (``replication``), which treats the workers'
tables as one: it asks every worker for its changes each flush (a request every 50 ms, cheaper
than a second channel per worker), routes each of the peer's entries to the worker that owns
the client (``listeners.worker_of``, the kernel's rule) and a clear to all. A worker started
again has lost its clients' entries: the supervisor asks the peer for its whole table again
(``lost``) and the peer's copy gives them back; the supervisor keeps no copy of its own.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import json
import logging
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from balancer.engines.builtin import core, message
from balancer.engines.builtin.dataplane import ApplyError, DataPlane, Key, bind, listeners_of
from balancer.engines.builtin.listeners import listen_group, worker_of
from balancer.engines.builtin.persistence import Change
from balancer.model import Config, VirtualService
from balancer.plan import Plan
from balancer.state import Counters, EngineStatus, VirtualServiceStatus

log = logging.getLogger("balancer.engine")

MAX_FDS = 253  # SCM_MAX_FD: descriptors one message can carry
RESTART_DELAY = 0.1  # a worker that exits is started again after this...
RESTART_DELAY_MAX = 5.0  # ...doubled while it keeps exiting within a minute, up to this
STEADY = 60.0
STOP_TIMEOUT = 10.0

Message = dict[str, Any]


class Channel:
    """One end of a supervisor-worker socket pair."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.loop = asyncio.get_running_loop()
        self._buffer = bytearray()
        self._fds: list[int] = []
        self._messages: asyncio.Queue[tuple[Message, list[int]] | None] = asyncio.Queue()
        self.loop.add_reader(sock.fileno(), self._readable)

    def _readable(self) -> None:
        try:
            data, ancillary, _, _ = self.sock.recvmsg(1 << 16, socket.CMSG_SPACE(MAX_FDS * 4))
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data, ancillary = b"", []
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds = array.array("i")
                fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
                self._fds += fds
        if not data:
            self.close()
            return
        self._buffer += data
        while (end := self._buffer.find(b"\n")) >= 0:
            line = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            self._messages.put_nowait((json.loads(line), self._fds))
            self._fds = []

    async def receive(self) -> tuple[Message, list[int]]:
        """The next message and the descriptors that came with it."""
        message = await self._messages.get()
        if message is None:
            self._messages.put_nowait(None)  # for any later receive
            raise ConnectionError("the other end of the channel has gone")
        return message

    async def send(self, message: Message, fds: list[int] | None = None) -> None:
        data = json.dumps(message, default=str).encode() + b"\n"
        sent = 0
        if fds:
            rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
            while True:
                try:
                    sent = self.sock.sendmsg([data], rights)
                    break
                except BlockingIOError:
                    await self._writable()
        await self.loop.sock_sendall(self.sock, data[sent:])

    async def _writable(self) -> None:
        ready = self.loop.create_future()
        self.loop.add_writer(self.sock.fileno(), ready.set_result, None)
        try:
            await ready
        finally:
            self.loop.remove_writer(self.sock.fileno())

    def close(self) -> None:
        if self.sock.fileno() >= 0:
            self.loop.remove_reader(self.sock.fileno())
            self.sock.close()
        self._messages.put_nowait(None)


# --- the worker's side ---------------------------------------------------------------------


def share(vs: VirtualService, index: int, count: int) -> VirtualService:
    """Worker ``index``'s part of each real server's max_connections: the limit shared out
    among the ``count`` workers, at least one each (0 stays no limit)."""

    def part(limit: int) -> int:
        return max(1, limit // count + (index < limit % count)) if limit else 0

    return vs.model_copy(
        update={
            "real_servers": tuple(
                rs.model_copy(update={"max_connections": part(rs.max_connections)})
                for rs in vs.real_servers
            )
        }
    )


async def serve_worker(channel: Channel, index: int, count: int) -> None:
    """Be worker ``index`` of ``count`` until the supervisor says stop or goes away."""
    plane = DataPlane(checks=False)
    try:
        while True:
            try:
                request, fds = await channel.receive()
            except ConnectionError:
                log.warning("worker %s: the supervisor has gone; stopping", index)
                return
            op = request.get("op")
            if op == "stop":
                await channel.send({"ok": True})
                return
            try:
                reply = await _worker_answer(plane, request, fds, index, count)
            except (ApplyError, KeyError, ValueError) as error:
                reply = {"ok": False, "error": str(error)}
            await channel.send(reply)
    finally:
        await plane.close()
        channel.close()


async def _worker_answer(
    plane: DataPlane, request: Message, fds: list[int], index: int, count: int
) -> Message:
    op = request["op"]
    if op == "apply":
        keys = [(str(ip), int(port)) for ip, port in request["listeners"]]
        sockets = {key: socket.socket(fileno=fd) for key, fd in zip(keys, fds, strict=True)}
        plan = message.received(
            request, plane.running(), plane.revision, lambda vs: share(vs, index, count)
        )
        await plane.apply(plan, sockets)
        plane.set_health(request["health"])
        return {"ok": True}
    if op == "health":
        plane.set_health(request["health"])
        return {"ok": True}
    if op == "status":
        return {"ok": True, "status": (await plane.status()).model_dump(mode="json")}
    if op == "persistence":
        return {"ok": True, "entries": await plane.persistence(str(request["service"]))}
    if op == "clear_persistence":
        return {"ok": True, "cleared": await plane.clear_persistence(str(request["service"]))}
    if op == "journal":
        await plane.journal(bool(request["on"]))
        return {"ok": True}
    if op == "drain":
        return {"ok": True, "changes": await plane.drain()}
    if op == "dump":
        return {"ok": True, "changes": await plane.dump()}
    if op == "learn":
        # Checked by the supervisor (replication.as_change) as they came from the peer.
        await plane.learn(request["changes"])
        return {"ok": True}
    if op == "entries":
        return {"ok": True, "entries": await plane.entries()}
    return {"ok": False, "error": f"unknown op {op!r}"}


# --- the supervisor's side -----------------------------------------------------------------


class Worker:
    """Worker process ``index`` as the supervisor sees it: started, told, and restarted."""

    def __init__(self, supervisor: Supervisor, index: int) -> None:
        self.supervisor = supervisor
        self.index = index
        self.process: asyncio.subprocess.Process | None = None
        self.channel: Channel | None = None
        self.started = 0.0
        self._talking = asyncio.Lock()  # one request and its reply at a time
        self._watch: asyncio.Task[None] | None = None
        self._health: asyncio.Task[None] | None = None
        self._health_again = False
        self.revision: int | None = None  # what the worker runs, once it has said so

    async def start(self) -> None:
        supervisor = self.supervisor
        ours, theirs = socket.socketpair()
        try:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "balancer.engines.builtin",
                "--dir",
                str(supervisor.data_dir),
                "--worker",
                str(self.index),
                "--workers",
                str(len(supervisor.workers)),
                "--channel",
                str(theirs.fileno()),
                pass_fds=[theirs.fileno()],
                stdin=asyncio.subprocess.DEVNULL,
            )
        finally:
            theirs.close()
        self.channel = Channel(ours)
        self.revision = None
        self.started = time.monotonic()
        self._watch = asyncio.get_running_loop().create_task(self._watched(self.process))
        await self.apply(list(supervisor.groups))
        if supervisor.journaling:
            with contextlib.suppress(ConnectionError):
                await self.request({"op": "journal", "on": True})

    async def _watched(self, process: asyncio.subprocess.Process) -> None:
        """Start the worker again whenever it exits, unless the engine is stopping."""
        delay = RESTART_DELAY
        while True:
            status = await process.wait()
            if self.supervisor.stopping:
                return
            log.warning(
                "worker %s (pid %s) exited with status %s; starting it again",
                self.index,
                process.pid,
                status,
                extra={"event": "worker", "worker": self.index, "status": status},
            )
            if self.channel is not None:
                self.channel.close()
                self.channel = None
            steady = time.monotonic() - self.started > STEADY
            delay = RESTART_DELAY if steady else min(delay * 2, RESTART_DELAY_MAX)
            await asyncio.sleep(delay)
            self._watch = None  # start() makes a new one; this one ends here
            try:
                await self.start()
            except (OSError, ConnectionError) as error:
                log.error("worker %s could not be started: %s", self.index, error)
                continue
            if self.supervisor.lost is not None:
                self.supervisor.lost()
            return

    async def request(self, message: Message, fds: list[int] | None = None) -> Message:
        """Send ``message``, return the reply; ConnectionError if the worker is not there."""
        async with self._talking:
            if self.channel is None:
                raise ConnectionError(f"worker {self.index} is not running")
            try:
                await self.channel.send(message, fds)
                reply, _ = await self.channel.receive()
            except OSError as error:  # the worker went while we spoke
                raise ConnectionError(f"worker {self.index}: {error}") from None
        if not reply.get("ok"):
            raise ApplyError(f"worker {self.index}: {reply.get('error')}")
        return reply

    async def apply(self, keys: list[Key], plan: Plan | None = None) -> None:
        """Give the worker the running revision (what ``plan`` changes, if the worker runs
        the revision it starts from), the health, and its socket of each of ``keys`` (those
        it already listens on it closes)."""
        supervisor = self.supervisor
        revision = supervisor.plane.revision
        if supervisor.config is None or revision is None:
            return
        if plan is not None and plan.base is not None and plan.base == self.revision:
            body = message.changes(plan)
        else:
            body = message.whole(supervisor.config, revision)
        body |= {"health": supervisor.plane.health(), "listeners": keys}
        fds = [supervisor.groups[key][self.index].fileno() for key in keys]
        # A worker that has gone gets everything when it is started again.
        with contextlib.suppress(ConnectionError):
            await self.request(body, fds)
            self.revision = revision

    def tell_health(self) -> None:
        """Send the health to the worker soon; flips meanwhile go in the same message."""
        if self._health is not None and not self._health.done():
            self._health_again = True
            return
        self._health = asyncio.get_running_loop().create_task(self._send_health())

    async def _send_health(self) -> None:
        self._health_again = True
        while self._health_again:
            self._health_again = False
            with contextlib.suppress(ConnectionError):
                await self.request({"op": "health", "health": self.supervisor.plane.health()})

    async def stop(self) -> None:
        for task in (self._watch, self._health):
            if task is not None:
                task.cancel()
        process = self.process
        if process is None:
            return
        with contextlib.suppress(ConnectionError, ApplyError):
            async with asyncio.timeout(STOP_TIMEOUT):
                await self.request({"op": "stop"})
        try:
            async with asyncio.timeout(STOP_TIMEOUT):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()
        if self.channel is not None:
            self.channel.close()


class Supervisor:
    """The engine with workers: the same requests as a single engine process answers."""

    def __init__(self, data_dir: Path, count: int) -> None:
        self.data_dir = data_dir
        self.plane = DataPlane(serve=False, on_health=self._health_changed)
        self.groups: dict[Key, list[socket.socket]] = {}
        self.config: Config | None = None
        self.stopping = False
        self.workers = [Worker(self, index) for index in range(count)]
        self._applying = asyncio.Lock()
        self.journaling = False
        # Told when a worker started again has lost its part of the persistence tables.
        self.lost: Callable[[], None] | None = None

    async def start(self) -> None:
        # A forced core that cannot run stops the engine here, rather than every worker at
        # its start, again and again.
        core.choose()
        for worker in self.workers:
            await worker.start()

    def _health_changed(self) -> None:
        for worker in self.workers:
            worker.tell_health()

    @property
    def revision(self) -> int | None:
        return self.plane.revision

    def running(self) -> dict[str, VirtualService]:
        return self.plane.running()

    async def apply(self, plan: Plan) -> None:
        """Bind what is new (or reject the revision, changing nothing), check, and have every
        worker run it; the sockets of VIPs and ports no longer wanted are closed last."""
        async with self._applying:
            wanted, gone = listeners_of(plan)
            new = [key for key in wanted if key not in self.groups]
            count = len(self.workers)
            self.groups.update(bind(new, wanted, lambda ip, port: listen_group(ip, port, count)))
            await self.plane.apply(plan)
            self.config = plan.config
            await asyncio.gather(*(worker.apply(new, plan) for worker in self.workers))
            for key in gone & self.groups.keys():
                for sock in self.groups.pop(key):
                    sock.close()

    async def _each(self, message: Message) -> list[Message | None]:
        """Every worker's reply to ``message``; None from a worker not running."""

        async def one(worker: Worker) -> Message | None:
            try:
                return await worker.request(message)
            except ConnectionError:
                return None

        return list(await asyncio.gather(*(one(worker) for worker in self.workers)))

    async def status(self) -> EngineStatus:
        """Health from the supervisor's checks, counters summed over the workers."""
        own = await self.plane.status()
        replies = await self._each({"op": "status"})
        statuses = [EngineStatus.model_validate(r["status"]) for r in replies if r is not None]
        return own.model_copy(
            update={
                "virtual_services": tuple(_summed(vs, statuses) for vs in own.virtual_services),
                "relay": next((s.relay for s in statuses if s.relay), None),
            }
        )

    async def workers_status(self) -> list[Message]:
        """Each worker's pid and own status (None while it is being started again)."""
        replies = await self._each({"op": "status"})
        return [
            {
                "index": worker.index,
                "pid": worker.process.pid if worker.process is not None else None,
                "status": reply["status"] if reply is not None else None,
            }
            for worker, reply in zip(self.workers, replies, strict=True)
        ]

    async def configuration(self) -> str:
        return await self.plane.configuration()

    async def persistence(self, service: str) -> list[dict[str, Any]]:
        self.plane.service(service)  # an unknown service: the same error as a single process
        replies = await self._each({"op": "persistence", "service": service})
        return [entry for reply in replies if reply is not None for entry in reply["entries"]]

    async def clear_persistence(self, service: str) -> int:
        self.plane.service(service)
        replies = await self._each({"op": "clear_persistence", "service": service})
        return sum(int(reply["cleared"]) for reply in replies if reply is not None)

    # --- persistence replication: every worker's tables as one (``replication.Tables``) ---

    async def journal(self, on: bool) -> None:
        self.journaling = on
        await self._each({"op": "journal", "on": on})

    async def drain(self) -> list[Change]:
        return await self._changes({"op": "drain"})

    async def dump(self) -> list[Change]:
        return await self._changes({"op": "dump"})

    async def _changes(self, request: Message) -> list[Change]:
        replies = await self._each(request)
        # As the workers sent them (lists, not tuples): only JSON is made of them, and
        # checking a hundred thousand entries from our own workers would double a dump's time.
        changes = [c for reply in replies if reply is not None for c in reply["changes"]]
        return cast("list[Change]", changes)

    async def learn(self, changes: list[Change]) -> None:
        count = len(self.workers)
        parts: list[list[Change]] = [[] for _ in range(count)]
        for change in changes:
            client = change[1]
            if client is None:  # a clear: every worker's part of the table
                for part in parts:
                    part.append(change)
            else:
                parts[worker_of(client, count)].append(change)

        async def one(worker: Worker, part: list[Change]) -> None:
            # A worker not running now gets the peer's whole table when it is started again.
            with contextlib.suppress(ConnectionError):
                await worker.request({"op": "learn", "changes": part})

        await asyncio.gather(
            *(one(w, part) for w, part in zip(self.workers, parts, strict=True) if part)
        )

    async def entries(self) -> dict[str, int]:
        counts = {label: 0 for label, s in self.plane.services.items() if s.table is not None}
        for reply in await self._each({"op": "entries"}):
            for label, count in (reply or {}).get("entries", {}).items():
                if label in counts:
                    counts[label] += int(count)
        return counts

    async def close(self) -> None:
        self.stopping = True
        await asyncio.gather(*(worker.stop() for worker in self.workers))
        await self.plane.close()
        for group in self.groups.values():
            for sock in group:
                sock.close()
        self.groups.clear()


def _summed(own: VirtualServiceStatus, statuses: list[EngineStatus]) -> VirtualServiceStatus:
    theirs = [vs for status in statuses for vs in status.virtual_services if vs.label == own.label]
    servers = {}
    for rs in own.real_servers:
        counted = [s.counters for vs in theirs for s in vs.real_servers if s.label == rs.label]
        servers[rs.label] = rs.model_copy(update={"counters": _total(counted)})
    return own.model_copy(
        update={
            "counters": _total([vs.counters for vs in theirs]),
            "fallback_connections": sum(vs.fallback_connections for vs in theirs),
            "real_servers": tuple(servers[rs.label] for rs in own.real_servers),
        }
    )


def _total(counters: list[Counters]) -> Counters:
    return Counters(
        active=sum(c.active for c in counters),
        total=sum(c.total for c in counters),
        bytes_in=sum(c.bytes_in for c in counters),
        bytes_out=sum(c.bytes_out for c in counters),
    )


async def run_worker(index: int, count: int, channel_fd: int) -> None:
    await serve_worker(Channel(socket.socket(fileno=channel_fd)), index, count)
