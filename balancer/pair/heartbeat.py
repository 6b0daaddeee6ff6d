"""This node's keepalived at run time: Heartbeat, in the guide's words.

``Heartbeat`` renders keepalived's configuration for this node of the pair (``ha.keepalived``),
runs keepalived, follows its notify FIFO (``ha.role``) and restarts it if it dies. Each change of
this node's state (Active, Passive, Fault) is published as ``events.RoleChanged`` and audited,
with its reason.

keepalived outlives a run of the management service: a restart of the service makes a new
``Heartbeat``, which adopts the keepalived already running on this data directory (its pid file)
and the state the last one saved, so no floating IP moves. Only ``stop`` stops keepalived, and
the caller stops it before the engine (the other order has a node that still holds the floating
IPs answer with resets). The FIFO keeps what keepalived writes while no one reads it, so the new
``Heartbeat`` reads what it missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from balancer import tool
from balancer.events import RoleChanged
from balancer.ha import role
from balancer.ha.keepalived import (
    KEEPALIVED,
    EngineCheck,
    Keepalived,
    KeepalivedError,
    Settings,
    render,
)
from balancer.model import Config, Pair

log = logging.getLogger(__name__)

DIRECTORY = "keepalived"  # in the data directory
PRIORITY = {"primary": 150, "secondary": 100}  # the Primary takes the floating IPs first
ROUTER = 51  # the VRID; the same on both nodes
IP_TIMEOUT = 10.0
# Bound on waiting for keepalived's report after Balancer starts or stops it; it reports
# within a tenth of a second.
REPORT_TIMEOUT = 10.0
# A keepalived that dies is restarted after BACKOFF s, twice as long after each death that
# follows a restart within STEADY s, at most BACKOFF_MAX s apart and RESTARTS times in a row.
BACKOFF = 0.5
BACKOFF_MAX = 30.0
STEADY = 60.0
RESTARTS = 10
SWITCHOVER = "operator: switchover"
RESTART = "operator: Restart Heartbeat"
SHUTDOWN = "the management service stops"
RUNNING = frozenset({"MASTER", "BACKUP", "FAULT"})  # keepalived's words while it runs


class HeartbeatError(Exception):
    """Heartbeat could not do what it was asked, or refused to; one line."""


class Audit(Protocol):
    """``Store.audit``."""

    def __call__(
        self, *, author: str, action: str, target: str = "", detail: dict[str, Any] | None = None
    ) -> None: ...


def floating_ips(config: Config) -> tuple[str, ...]:
    """The floating IPs of a configuration: its virtual services' distinct addresses."""
    return tuple(sorted({str(vs.ip) for vs in config.virtual_services}))


def interface_of(addresses: str, address: str) -> str:
    """The interface that holds ``address``, from ``ip -j address show``."""
    wanted = ipaddress.ip_address(address)
    for link in json.loads(addresses):
        for held in link.get("addr_info", ()):
            with contextlib.suppress(KeyError, ValueError):
                if ipaddress.ip_address(held["local"]) == wanted:
                    return str(link["ifname"])
    raise HeartbeatError(f"pair.local_address: {address} is on no interface of this node")


def settings(
    pair: Pair, interface: str, vips: Iterable[str], check: EngineCheck, fifo: Path
) -> Settings:
    """keepalived's settings for this node of ``pair``."""
    return Settings(
        interface=interface,
        local=str(pair.local_address),
        peer=str(pair.peer_address),
        vips=tuple(sorted(set(vips))),
        check=check,
        fifo=fifo,
        advert=pair.advert_interval,
        preempt=pair.preempt,
        priority=PRIORITY[pair.role],
        router=ROUTER,
    )


def announced(pair: Pair, change: role.Change) -> RoleChanged | None:
    """The event a change publishes: only a change of state, not of keepalived's word alone
    (a FAULT that stops is still a Fault)."""
    if change.before.state is change.after.state:
        return None
    return RoleChanged(
        role=pair.role,
        state=change.after.state.value.lower(),
        previous=change.before.state.value.lower(),
        reason=change.after.reason,
        at=change.after.since,
    )


def saved(path: Path) -> role.Status | None:
    """The status the last Heartbeat of this node saved, if it can be read."""
    try:
        kept = json.loads(path.read_text())
        return role.Status(role.State(kept["state"]), kept["word"], kept["reason"], kept["since"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _save(path: Path, status: role.Status) -> None:
    kept = {"state": status.state.value, "word": status.word, "reason": status.reason}
    candidate = path.with_suffix(".new")
    candidate.write_text(json.dumps({**kept, "since": status.since}))
    candidate.replace(path)


def _backoff(restarts: int) -> float:
    return float(min(BACKOFF_MAX, BACKOFF * 2 ** (restarts - 1)))


@contextlib.contextmanager
def _one_line() -> Iterator[None]:
    try:
        yield
    except (KeepalivedError, ValueError) as error:
        raise HeartbeatError(str(error)) from None


class Heartbeat:
    """keepalived for this node of ``pair``, its files in ``data_dir``/keepalived.

    ``publish`` gets each RoleChanged (``controller.events.publish``) and ``audit`` records it
    (``store.audit``). ``binary``, ``wrap`` (``ip netns exec NAME``, before every command) and
    ``check`` (the engine check, ``EngineCheck.for_node(data_dir)`` by default) are for tests.
    """

    def __init__(
        self,
        data_dir: Path,
        pair: Pair,
        publish: Callable[[RoleChanged], None],
        audit: Audit,
        *,
        clock: Callable[[], float] = time.time,
        binary: str = KEEPALIVED,
        wrap: Sequence[str] = (),
        check: EngineCheck | None = None,
    ) -> None:
        data_dir = data_dir.resolve()
        self.pair = pair
        self.directory = data_dir / DIRECTORY
        self.keepalived = Keepalived(self.directory, binary, wrap)
        self.fifo = self.directory / "notify"
        self._publish = publish
        self._audit = audit
        self._clock = clock
        self._wrap = list(wrap)
        self._check = check or EngineCheck.for_node(data_dir)
        self._status_file = self.directory / "status.json"
        self._tracker = role.Tracker(role.initial(clock()), clock=clock)
        self._settings: Settings | None = None
        self._reported = asyncio.Condition()
        self._lock = asyncio.Lock()  # one start, update, restart or stop at a time
        self._following: asyncio.Task[None] | None = None
        self._watching: asyncio.Task[None] | None = None

    def status(self) -> role.Status:
        """This node's state (Active, Passive, Fault, Unknown), since when, and why."""
        return self._tracker.status

    async def start(self, vips: Iterable[str]) -> None:
        """Run keepalived with floating IPs ``vips`` (none yet is fine: the node still learns
        its state), or adopt the one that runs this data directory's configuration already,
        reloading it if its configuration differs; return once keepalived has reported."""
        async with self._lock:
            if self._following is not None:
                raise HeartbeatError("heartbeat: already started")
            with _one_line():
                wanted = settings(self.pair, await self._interface(), vips, self._check, self.fifo)
            adopted = self.keepalived.adopt()
            status = saved(self._status_file) if adopted else None
            self._tracker = role.Tracker(
                status or role.initial(self._clock()),
                clock=self._clock,
                keepalived_log=self.keepalived.log,
                silence=wanted.silence,
            )
            with _one_line():
                if not adopted:
                    await self.keepalived.configure(wanted)
                elif self.keepalived.config.read_text() != render(wanted):
                    await self.keepalived.configure(wanted)
                    self.keepalived.reload()
            self._settings = wanted
            self._following = asyncio.create_task(self._follow())
            if adopted:
                log.info(
                    "keepalived (pid %s) adopted: the floating IPs stay where they are",
                    self.keepalived.pid(),
                )
                self._watch()
                return
            try:
                with _one_line():
                    await self.keepalived.start()
            finally:
                self._watch()  # one that did not start is tried again, as one that died
            await self._until(lambda status: status.word in RUNNING)

    async def update(self, vips: Iterable[str]) -> bool:
        """Have keepalived hold ``vips`` from now on (a reload: the floating IPs it keeps stay
        put); whether that changed anything."""
        async with self._lock:
            if self._settings is None:
                raise HeartbeatError("heartbeat: not started")
            with _one_line():
                wanted = replace(self._settings, vips=tuple(sorted(set(vips))))
            if wanted == self._settings:
                return False
            with _one_line():
                await self.keepalived.configure(wanted)
                self._settings = wanted
                if self.keepalived.running():  # else its restart reads the new one
                    self.keepalived.reload()
            return True

    async def reconfigure(self, pair: Pair) -> bool:
        """Have keepalived run ``pair``'s advert interval and preemption from now on (the
        operator's HA settings; nothing else of the pair may differ): a reload, never a
        restart, so the floating IPs stay where they are. A configuration ``keepalived -t``
        refuses changes nothing. Whether anything changed."""
        async with self._lock:
            if self._settings is None:
                raise HeartbeatError("heartbeat: not started")
            same = {"advert_interval": self.pair.advert_interval, "preempt": self.pair.preempt}
            if pair.model_copy(update=same) != self.pair:
                raise HeartbeatError(
                    "heartbeat: only the advert interval and preemption change without a restart"
                )
            with _one_line():
                wanted = replace(self._settings, advert=pair.advert_interval, preempt=pair.preempt)
            if wanted != self._settings:
                with _one_line():
                    await self.keepalived.configure(wanted)
                    if self.keepalived.running():  # else its restart reads the new one
                        self.keepalived.reload()
            changed, self._settings, self.pair = wanted != self._settings, wanted, pair
            # The reason a takeover gives says how long the peer was silent.
            self._tracker._causes.silence = wanted.silence
            return changed

    async def restart(self) -> None:
        """Restart this node's keepalived gracefully (Restart Heartbeat, one node): an Active
        node hands the floating IPs to the peer first. Returns once keepalived runs again."""
        await self._cycle(RESTART)

    async def switchover(self) -> None:
        """Make the peer Active, refusing no connection: this Active node's keepalived stops
        gracefully (priority 0, the peer takes over at once) and starts again as Passive,
        which it stays without preemption. Returns once keepalived runs again."""
        if self.pair.preempt:
            raise HeartbeatError(
                "switchover: pair.preempt is on, so this node would take the floating IPs back "
                "at once; turn preemption off to switch over"
            )
        state = self.status().state
        if state is not role.State.ACTIVE:
            raise HeartbeatError(
                f"switchover: this node is {state.value}, so it holds no floating IP to hand over"
            )
        await self._cycle(SWITCHOVER)

    async def stop(self, reason: str = SHUTDOWN) -> None:
        """Stop keepalived gracefully, for a real stop of the node: the peer takes the floating
        IPs over at once. Call it before the engine stops."""
        async with self._lock:
            await self._unwatch()
            with _one_line():
                await self._stop_keepalived(reason)
            await self._unfollow()
            self._settings = None

    async def close(self) -> None:
        """Stop following and supervising keepalived, and leave it running: the next run of
        the management service adopts it."""
        async with self._lock:
            await self._unwatch()
            await self._unfollow()
            self._settings = None

    async def _cycle(self, reason: str) -> None:
        async with self._lock:
            if self._settings is None:
                raise HeartbeatError("heartbeat: not started")
            await self._unwatch()
            try:
                with _one_line():
                    await self._stop_keepalived(reason)
                    await self.keepalived.start()
            finally:
                self._watch()
            await self._until(lambda status: status.word in RUNNING)

    async def _stop_keepalived(self, reason: str) -> None:
        was = self.keepalived.running() and self._following is not None
        self._tracker.operator = reason
        try:
            await self.keepalived.stop()
            if was:  # its last word, for the reason
                await self._until(lambda status: status.word == "STOP")
        finally:
            self._tracker.operator = None

    async def _interface(self) -> str:
        command = [*self._wrap, "ip", "-j", "address", "show"]
        try:
            status, output = await tool.run(command, IP_TIMEOUT)
        except TimeoutError:
            raise HeartbeatError(f"ip address show did not finish in {IP_TIMEOUT}s") from None
        if status != 0:
            raise HeartbeatError(f"ip address show failed: {output.strip()[:200]}")
        return interface_of(output, str(self.pair.local_address))

    async def _follow(self) -> None:
        async for line in role.lines(self.fifo):
            change = self._tracker.read(line)
            if change is not None:
                await self._record(change)

    async def _record(self, change: role.Change) -> None:
        _save(self._status_file, change.after)
        async with self._reported:
            self._reported.notify_all()
        event = announced(self.pair, change)
        if event is None:
            return
        self._publish(event)
        detail = {
            "state": event.state,
            "previous": event.previous,
            "reason": event.reason,
            "keepalived": change.after.word,
        }
        self._audit(author="system", action="role_changed", target=self.pair.role, detail=detail)

    async def _until(self, ready: Callable[[role.Status], bool]) -> None:
        """Wait, at most REPORT_TIMEOUT s, until keepalived's reports make ``ready`` true."""
        async with self._reported:
            try:
                async with asyncio.timeout(REPORT_TIMEOUT):
                    await self._reported.wait_for(lambda: ready(self._tracker.status))
            except TimeoutError:
                log.warning(
                    "keepalived did not report within %ss; this node is %s: %s",
                    REPORT_TIMEOUT,
                    self._tracker.status.state.value,
                    self._tracker.status.reason,
                )

    def _watch(self) -> None:
        self._watching = asyncio.create_task(self._supervise())

    async def _unwatch(self) -> None:
        await _cancel(self._watching)
        self._watching = None

    async def _unfollow(self) -> None:
        await _cancel(self._following)
        self._following = None

    async def _supervise(self) -> None:
        """Restart keepalived whenever it ends unasked, RESTARTS times in a row at most."""
        restarts = 0
        while restarts < RESTARTS:
            began = time.monotonic()
            try:
                said = await self.keepalived.wait()
            except KeepalivedError as error:  # it did not even start
                said = str(error)
            change = self._tracker.ended(said)
            if change is not None:
                await self._record(change)
            restarts = 1 if time.monotonic() - began > STEADY else restarts + 1
            delay = _backoff(restarts)
            log.warning("%s; restarting it in %.1f s", said, delay)
            await asyncio.sleep(delay)
            try:
                await self.keepalived.start()
            except KeepalivedError as error:
                log.warning("keepalived could not be restarted: %s", error)
                continue
            log.warning("keepalived restarted (pid %s)", self.keepalived.pid())
        log.error(
            "keepalived ended %d times in a row and is not restarted again; "
            "Restart Heartbeat starts it",
            RESTARTS,
        )


async def _cancel(task: asyncio.Task[None] | None) -> None:
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
