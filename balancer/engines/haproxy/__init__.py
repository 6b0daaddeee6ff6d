"""The HAProxy engine: Debian's haproxy in master-worker mode, driven through its master CLI.

A commit renders haproxy.cfg and has ``haproxy -c`` check it, then either changes real servers
at runtime (weight, drain, halt, connection cap) or reloads: the master starts a new worker on
the same listening sockets and the old one finishes its connections. A configuration HAProxy
refuses, at the check or at the reload, changes nothing that runs, and the commit fails with
HAProxy's own words.

Files are in ``<data dir>/haproxy/`` (see ``Paths``). ``running.json`` holds the model the
workers run and its revision, with the revision of the last reload, which the current worker
reports itself (``setenv BALANCER_REVISION``): a daemon that attaches later trusts the file only
when the two agree.

In an HA pair the stick tables are replicated to the other node's HAProxy by HAProxy's peers
(see ``render``). ``replication.json`` keeps the settings, with copies of the pair's
certificate, key and authority beside it, so that HAProxy started again, or adopted by a
restarted daemon, goes on replicating.

A worker hands its stick tables to the next one at a reload only once it has learnt them
itself: from the worker before it, then from the other node (``runtime.peers_synced``). A
reload waits for that, a bounded time, before and after; where the current worker has still
not finished, the engine copies its tables to the next one itself. A worker with no tables at
all says at once it has learnt everything, so the first revision after attach started HAProxy
empty starts it again rather than reloading it (see ``_restart``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from balancer.engines import EngineError, EngineRejected, Replication
from balancer.engines.haproxy import limits, ports, runtime
from balancer.engines.haproxy.limits import Limit
from balancer.engines.haproxy.master import POLL, Master
from balancer.engines.haproxy.paths import Paths
from balancer.engines.haproxy.render import Sections, clashes, files, peer_name, render
from balancer.engines.haproxy.status import engine_status
from balancer.model import Config, PersistenceMode, VirtualService
from balancer.plan import Plan, make
from balancer.state import EngineStatus, ReplicationStatus, TableReplication
from balancer.validate import Problem, parse

log = logging.getLogger("balancer.engine")

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
# HAProxy's peers wait 5 seconds before deciding no older worker will teach a new one.
SYNC_TIMEOUT = 6.0
# The master CLI is away while the master executes itself again for a reload.
RELOAD_GAP = 3.0

Tables = dict[str, list[runtime.StickEntry]]


class HaproxyEngine:
    name = "haproxy"

    def __init__(self, data_dir: Path, binary: str = HAPROXY) -> None:
        self.paths = Paths(data_dir)
        self.master = Master(self.paths, binary)
        self._running: Config | None = None
        self._revision: int | None = None
        self._reloaded: int | None = None  # the revision of the last reload
        self._started: dict[int, float] = {}  # the current worker's pid -> when it started
        # Each service's text in haproxy.cfg and in running.json, made again only when it changes.
        self._sections = Sections()
        self._documents = Sections(lambda vs: vs.model_dump_json())
        self._applying = asyncio.Lock()
        self._replication = _load_replication(self.paths.replication)
        # The master whose current worker was seen to finish learning the peer's tables, and
        # whether the peer's link was up, since when (as far as this daemon has seen).
        self._synced_master: int | None = None
        self._link: tuple[bool, float | None] | None = None
        self._empty = False  # the master runs the configuration attach started, which binds nothing

    async def _worker(self, command: str) -> str:
        return await self.master.cli(runtime.worker(None, command))

    # --- attach, stop -----------------------------------------------------------------------

    async def attach(self) -> int | None:
        try:
            running = (await self.master.processes()).current is not None
        except EngineError:
            running = False
        if running:
            return await self._adopt()
        if not Path(self.master.binary).exists():
            raise EngineError(f"HAProxy is not installed: no {self.master.binary}")
        await self.master.stop()  # a master of this directory that no longer answers
        paths = self.paths
        paths.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        paths.log.parent.mkdir(parents=True, exist_ok=True)
        paths.running.unlink(missing_ok=True)
        self._running = self._revision = self._reloaded = None
        # A configuration that binds nothing; the controller applies its revision next.
        _write(paths.config, self._render(Config(), None))
        _write(paths.state_file, runtime.NO_STATE)  # no health to carry into a fresh start
        await self.master.start()
        self._empty = True
        return None

    async def _adopt(self) -> int | None:
        """Take over a running HAProxy: its model and revision, if the worker confirms them."""
        reported = runtime.parse_revision(await self.master.cli(runtime.show_revision()))
        # Only the configuration attach starts has no revision (see _restart).
        self._empty = reported is None
        try:
            saved = json.loads(self.paths.running.read_text())
            config = parse(saved["config"])
        except (OSError, ValueError, KeyError):
            return None
        if reported is None or saved.get("reloaded") != reported:
            return None  # a commit was cut short: the controller applies its revision again
        self._running, self._revision, self._reloaded = config, saved["revision"], reported
        return self._revision

    async def detach(self) -> None:
        """Nothing to let go of: HAProxy's master runs on its own."""

    async def stop(self) -> None:
        await self.master.stop()
        self.paths.running.unlink(missing_ok=True)
        self._running = self._revision = self._reloaded = None

    # --- apply --------------------------------------------------------------------------------

    def problems(self, config: Config, before: Config) -> list[Problem]:
        limit = Limit.of_this_process()
        replicating = self._replication is not None
        needed = files(config, limit, replicating)
        found = limits.problems(needed, limit)
        if found and needed.fixed <= files(before, limit, replicating).fixed:
            found = []  # no more than before: removing or fixing what the limit cannot hold
        return found + clashes(config)

    async def apply(self, plan: Plan) -> None:
        async with self._applying:
            if plan.base is None or plan.base != self._revision:
                # Not from what runs (a plan from nothing, or a restarted engine): from that.
                plan = make(self._running, plan.config, plan.revision, self._revision)
            if plan.runtime and await self._at_runtime(plan):
                return
            await self._reload(plan)

    async def _at_runtime(self, plan: Plan) -> bool:
        """Make the plan's changes with the Runtime API; False if HAProxy refused one (a
        reload then makes everything as configured). Nothing is added, so nothing is checked."""
        if not await self.master.send(runtime.runtime_commands(plan)):
            return False
        # The file says what runs now; the revision of the last reload stays the one to trust.
        _write(self.paths.config, self._render(plan.config, plan.revision))
        self._record(plan.config, plan.revision, self._reloaded)
        log.info("revision %s applied at runtime", plan.revision, extra=_event(plan.revision))
        return True

    async def _reload(self, plan: Plan, handed_over: bool = True) -> None:
        """Render, check and reload; HAProxy refusing the configuration changes nothing.
        ``handed_over``: False when the local peer changes (replication starts or stops), as
        the old worker then hands its tables to an address the new one does not listen on."""
        config, revision, paths = plan.config, plan.revision, self.paths
        limit = Limit.of_this_process()
        needed = files(config, limit, self._replication is not None)
        refused = limits.problems(needed, limit) + clashes(config)
        if refused:
            why = "; ".join(str(problem) for problem in refused)
            log.warning("revision %s rejected: %s", revision, why, extra=_event(revision))
            raise EngineRejected(why)
        candidate = paths.directory / "haproxy.cfg.new"
        _write(candidate, self._render(config, revision))
        try:
            await self.master.check(candidate)
            taken = ports.unbindable(config, ports.listening(paths.config.read_text()))
            if taken is not None:
                raise EngineRejected(taken)
        except EngineRejected as error:
            candidate.unlink()
            log.warning("revision %s rejected: %s", revision, error, extra=_event(revision))
            raise
        kept = await self._tables_to_carry(plan, handed_over)
        dump = await self._worker("show servers state")
        _write(paths.state_file, runtime.carried_state(dump, plan))
        previous = paths.config.read_text()
        if self._empty and self._replication is not None:
            await self._restart(candidate, previous)
            self._record(config, revision, revision)
            log.info("revision %s applied: HAProxy started", revision, extra=_event(revision))
            return
        current = (await self.master.processes()).current
        candidate.replace(paths.config)
        after, said = await self.master.reload()
        if after.current == current or after.failed:
            # The master kept the old worker running; put its configuration back in place.
            _write(paths.config, previous)
            why = runtime.rejection(runtime.alerts(said, after.master))
            log.warning("revision %s rejected: %s", revision, why, extra=_event(revision))
            raise EngineRejected(why)
        self._empty = False
        if kept is None:
            await self._synced()  # the old worker teaches the new one every entry it has
        elif kept:
            await self._restore(kept)
        self._record(config, revision, revision)
        log.info("revision %s applied: HAProxy reloaded", revision, extra=_event(revision))

    async def _restart(self, candidate: Path, previous: str) -> None:
        """Start HAProxy again on ``candidate``, in place of the configuration that binds
        nothing (no connection to keep). A reload would leave the other node's tables behind:
        a worker that had no tables says it has learnt them all, and its successor believes
        it and never asks the peer for the tables it adds. A master's first worker asks."""
        await self.master.stop()
        candidate.replace(self.paths.config)
        try:
            await self.master.start()
        except EngineError as error:
            _write(self.paths.config, previous)
            await self.master.start()
            raise EngineRejected(str(error)) from None
        self._empty = False

    async def _tables_to_carry(self, plan: Plan, handed_over: bool) -> Tables | None:
        """Persistence entries the engine must copy to the next worker itself: those of a
        worker that HAProxy's peers would not hand over yet (see ``runtime.peers_synced``) or
        could not (not ``handed_over``: the local peer changes), of services sticky before and
        after the plan. None when HAProxy hands them over itself."""
        labels = []
        for vs in plan.config.virtual_services:
            if vs.label in plan.added_labels:
                continue
            change = plan.by_label.get(vs.label)
            before = change.before if change is not None else vs
            if (
                _sticky(before.persistence.mode)
                and _sticky(vs.persistence.mode)
                and before.ip.version == vs.ip.version
            ):
                labels.append(vs.label)
        if not labels:
            return {}
        if handed_over and runtime.peers_synced(await self._worker("show peers")):
            return None
        used = runtime.tables_used(await self._worker("show table"))
        labels = [label for label in labels if used.get(label)]  # an empty one has nothing
        if not labels:
            return {}
        if handed_over and self._replication is not None:
            # A worker reloaded before it has learnt the tables hands the next one nothing,
            # and the entries it copies itself would lose what the peer still teaches: wait
            # for HAProxy's own hand-over rather than copy, when it comes within the bound.
            await self._synced()
            if runtime.peers_synced(await self._worker("show peers")):
                return None
        names = await self._server_names()
        return {label: await self._table(label, names) for label in labels}

    async def _restore(self, kept: Tables) -> None:
        ids = runtime.server_ids(await self._worker("show servers state"))
        for label, entries in kept.items():
            servers = {server: id_ for (service, server), id_ in ids.items() if service == label}
            await self.master.send(runtime.restore(label, entries, servers))

    async def _synced(self) -> None:
        """Wait, a bounded time, until the current worker holds its stick tables."""
        for _ in range(int(SYNC_TIMEOUT / POLL)):
            if runtime.peers_synced(await self._worker("show peers")):
                return
            await asyncio.sleep(POLL)

    def _render(self, config: Config, revision: int | None) -> str:
        limit = Limit.of_this_process()
        return render(config, self.paths, limit, revision, self._sections, self._replication)

    def _record(self, config: Config, revision: int, reloaded: int | None) -> None:
        services = ",".join(self._documents(vs) for vs in config.virtual_services)
        self._documents.only(config)
        self._sections.only(config)
        head = json.dumps({"revision": revision, "reloaded": reloaded})[:-1]
        _write(self.paths.running, f'{head}, "config": {{"virtual_services": [{services}]}}}}')
        self._running, self._revision, self._reloaded = config, revision, reloaded

    # --- what runs ------------------------------------------------------------------------------

    async def status(self) -> EngineStatus:
        # The master CLI is away for a moment while the master reloads: wait that out.
        for _ in range(int(RELOAD_GAP / POLL)):
            try:
                return await self._status()
            except EngineError:
                await asyncio.sleep(POLL)
        return await self._status()

    async def _status(self) -> EngineStatus:
        processes = await self.master.processes()
        current = processes.current
        if current is None:
            raise EngineError("HAProxy's master runs no worker")
        workers = [runtime.parse_stat(await self._worker("show stat"))]
        for pid in processes.old:
            try:
                reply = await self.master.cli(runtime.worker(pid, "show stat"))
            except EngineError:
                continue  # it finished its last connection meanwhile
            workers.append(runtime.parse_stat(reply))
        if current not in self._started:
            self._started = {current: time.time() - processes.uptime}
        started = self._started[current]
        return engine_status(self._running or Config(), self._revision, current, started, workers)

    async def configuration(self) -> str:
        try:
            return self.paths.config.read_text()
        except OSError as error:
            raise EngineError(f"no haproxy.cfg: {error}") from None

    async def _server_names(self) -> dict[str, dict[int, str]]:
        """Each service's server labels by HAProxy's numeric id."""
        names: dict[str, dict[int, str]] = {}
        for (service, server), id_ in runtime.server_ids(
            await self._worker("show servers state")
        ).items():
            names.setdefault(service, {})[id_] = server
        return names

    async def _table(
        self, label: str, names: dict[str, dict[int, str]] | None = None
    ) -> list[runtime.StickEntry]:
        """``names``: from ``_server_names``, read once for many tables."""
        if names is None:
            names = await self._server_names()
        return runtime.parse_table(await self._worker(f"show table {label}"), names.get(label, {}))

    def _service(self, label: str) -> VirtualService:
        vs = self._running.virtual_service(label) if self._running is not None else None
        if vs is None:
            raise EngineError(f"virtual service {label!r} is not running")
        return vs

    async def persistence(self, service: str) -> list[dict[str, Any]]:
        persistence = self._service(service).persistence
        if not _sticky(persistence.mode):
            return []
        return [
            {
                "client": entry.client,
                "server": entry.server,
                # A connection holds its entry; the timeout starts when it ends.
                "expires_in": round(persistence.timeout if entry.in_use else entry.expires_in, 1),
            }
            for entry in await self._table(service)
            if entry.server is not None
        ]

    async def clear_persistence(self, service: str) -> int:
        """Forget every client but those with a connection open: HAProxy keeps an entry in
        use (its connection will renew it when it ends)."""
        if not _sticky(self._service(service).persistence.mode):
            return 0
        before = await self._table(service)
        # One key at a time: a bare "clear table" leaves some idle entries behind in 2.6.
        commands = [f"clear table {service} key {entry.client}" for entry in before]
        await self.master.send(commands)
        after = await self._table(service)
        return len([e for e in before if e.server]) - len([e for e in after if e.server])

    # --- persistence replication ---------------------------------------------------------------

    async def replicate(self, replication: Replication | None) -> None:
        async with self._applying:
            wanted = None if replication is None else _peer_files(replication)
            if replication == self._replication and wanted == self._peer_files():
                return
            before = self._replication, self._peer_files()
            self._keep(replication, wanted)
            try:
                # The local peer is named by the node's address while it replicates.
                local = None if replication is None else replication.local
                await self._reload_running(handed_over=local == _local(before[0]))
            except EngineError:
                self._keep(*before)
                raise
            log.info(
                "persistence replication %s",
                "stopped" if replication is None else f"with {replication.peer}",
                extra={"event": "replicate", "engine": "haproxy"},
            )

    def _keep(self, replication: Replication | None, files: tuple[str, str] | None) -> None:
        """Keep ``replication`` and the peers' certificate files, or remove them."""
        paths = self.paths
        if replication is None or files is None:
            for path in (paths.replication, paths.peer_bundle, paths.peer_authority):
                path.unlink(missing_ok=True)
        else:
            paths.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            for path, text in zip((paths.peer_bundle, paths.peer_authority), files, strict=True):
                _write(path, text, private=True)
            _write(paths.replication, _dump_replication(replication))
        self._replication = replication
        self._synced_master, self._link = None, None

    def _peer_files(self) -> tuple[str, str] | None:
        """The bundle and authority HAProxy's peers use now, if any."""
        try:
            return self.paths.peer_bundle.read_text(), self.paths.peer_authority.read_text()
        except OSError:
            return None

    async def _reload_running(self, handed_over: bool) -> None:
        """Reload what runs, as it is, into a configuration rendered again."""
        try:
            await self.master.processes()
        except EngineError:
            return  # nothing runs: attach renders the settings kept
        if self._running is None or self._revision is None:
            candidate = self.paths.directory / "haproxy.cfg.new"
            _write(candidate, self._render(Config(), None))
            await self.master.check(candidate)
            candidate.replace(self.paths.config)
            await self.master.reload()
            return
        plan = make(self._running, self._running, self._revision, self._revision)
        await self._reload(plan, handed_over)

    async def replication(self) -> ReplicationStatus | None:
        replication = self._replication
        if replication is None:
            return None
        processes = await self.master.processes()
        parsed = runtime.parse_peers(await self._worker("show peers"))
        used = runtime.tables_used(await self._worker("show table"))
        flags, peers = parsed if parsed is not None else (0, [])
        name = peer_name(replication.peer)
        peer = next((p for p in peers if p.remote and p.name == name), None)
        if flags & runtime.PEERS_RESYNC_FINISHED == runtime.PEERS_RESYNC_FINISHED:
            self._synced_master = processes.master
        now = time.time()
        up = peer is not None and peer.up
        since = self._since(up, peer, now, now - processes.uptime)
        pending = peer.pending if peer is not None else {}
        tables = []
        for vs in self._running.virtual_services if self._running is not None else ():
            if _sticky(vs.persistence.mode):
                waiting = pending.get(vs.label, 0)
                # HAProxy says how many changes wait for the peer, not since when.
                lag = 0.0 if waiting == 0 else None
                tables.append(
                    TableReplication(
                        service=vs.label, entries=used.get(vs.label, 0), pending=waiting, lag=lag
                    )
                )
        host = f"[{name}]" if ":" in name else name
        return ReplicationStatus(
            peer=f"{host}:{replication.port}",
            up=up,
            since=since,
            # Not before the first revision runs: there are no tables to have learnt yet.
            synced=self._synced_master == processes.master and not self._empty,
            tables=tuple(tables),
        )

    def _since(
        self, up: bool, peer: runtime.Peer | None, now: float, worker_started: float
    ) -> float | None:
        """When the link last went up or down. Up: since its handshake, as HAProxy says (in
        whole seconds, so kept while it stays up). Down: since this daemon saw it go down, or
        since the current worker started, which has not had the link since."""
        last = self._link
        if up:
            assert peer is not None
            handshake = now - (peer.handshake or 0.0)
            if last is None or not last[0] or last[1] is None or abs(last[1] - handshake) > 2:
                self._link = (True, handshake)
        elif last is None or last[0]:
            self._link = (False, now if last is not None else worker_started)
        return self._link[1] if self._link is not None else None


def _event(revision: int) -> dict[str, Any]:
    return {"event": "apply", "engine": "haproxy", "revision": revision}


def _sticky(mode: PersistenceMode) -> bool:
    return mode is not PersistenceMode.NONE


def _write(path: Path, text: str, private: bool = False) -> None:
    """Write ``path`` whole or not at all: a reader never sees half a file. ``private``:
    readable by its owner alone from the start (a key)."""
    partial = path.with_name(path.name + ".partial")
    partial.unlink(missing_ok=True)
    if private:
        partial.touch(mode=0o600)
    partial.write_text(text)
    partial.replace(path)


def _local(replication: Replication | None) -> str | None:
    return None if replication is None else replication.local


def _peer_files(replication: Replication) -> tuple[str, str]:
    """HAProxy's ``crt`` for the peers (the certificate, then its key) and the authority."""
    try:
        certificate = replication.certificate.read_text()
        key = replication.key.read_text()
        authority = replication.authority.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise EngineError(f"persistence replication: cannot read {error}") from None
    return certificate.rstrip("\n") + "\n" + key, authority


def _dump_replication(replication: Replication) -> str:
    fields = {
        "local": replication.local,
        "peer": replication.peer,
        "port": replication.port,
        "certificate": str(replication.certificate),
        "key": str(replication.key),
        "authority": str(replication.authority),
    }
    return json.dumps(fields, indent=2) + "\n"


def _load_replication(path: Path) -> Replication | None:
    """The settings ``replicate`` kept, if any; unreadable ones are as none (logged)."""
    try:
        fields = json.loads(path.read_text())
        return Replication(
            local=fields["local"],
            peer=fields["peer"],
            port=int(fields["port"]),
            certificate=Path(fields["certificate"]),
            key=Path(fields["key"]),
            authority=Path(fields["authority"]),
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as error:
        log.warning("persistence replication: %s is unreadable, ignored: %s", path, error)
        return None
