"""This node's place in an HA pair at run time: standalone, or one of two.

The daemon makes one ``Cluster`` for each run of the management service and the API and the
WebUI read it. Standalone it does nothing. Paired, it runs the node's keepalived
(``Heartbeat``), hears the peer over the pair's mutual TLS (``Link``), has the Primary keep the
Secondary in step (``Syncer``) and the Secondary forward drain, halt and online to the Primary;
pairing (``form``) and Break Clustered Pair (``dissolve``) start and stop all of that without a
restart.

A restart of the management service (``stop``) leaves keepalived running, so the floating IPs
stay where they are and the next run adopts it; only a real stop of the node (``release``)
stops keepalived, before the engine, so the peer takes the floating IPs at once.

Nothing here may take the management plane down: a part that cannot start (the pair's files
unreadable, keepalived refusing its configuration) is kept as ``fault``, logged, audited and
shown on every page, and the WebUI and API go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from balancer import tool
from balancer.controller import Controller
from balancer.engines import EngineError, Replication
from balancer.events import EngineChanged, Missed, RevisionApplied, Subscription
from balancer.ha import trust
from balancer.ha.role import State
from balancer.ha.sync import peer_at
from balancer.model import Pair
from balancer.model.types import IPAddress
from balancer.pair import replication
from balancer.pair.facts import Gatherer
from balancer.pair.heartbeat import (
    IP_TIMEOUT,
    Heartbeat,
    HeartbeatError,
    floating_ips,
    interface_of,
)
from balancer.pair.link import Link, Peer, PeerError
from balancer.pair.split_brain import Watch
from balancer.pair.status import NodeView, PairView
from balancer.pair.syncer import Syncer, forwarding
from balancer.pair.two_factor import Told
from balancer.store import Store
from balancer.validate import parse_as

log = logging.getLogger("balancer.pair")

# What the HTTPS listeners show and accept: the pair's trust and the peer's address, or
# (None, None) standalone (``front.listeners.PairTLS.set``).
Secure = Callable[[trust.Trust | None, IPAddress | None], None]
# Heartbeat's test hooks (binary, wrap, check), for tests that run keepalived by hand.
HeartbeatMaker = Callable[..., Heartbeat]


# The peer's route for its own keepalived (balancer.api.peer): restart or switchover.
HEARTBEAT = "/api/v1/peer/heartbeat/"
# A keepalived restart waits for its state; a hand-over to the peer takes a second at most.
HEARTBEAT_WAIT = 30.0
# The peer's route for the pair's HA settings (balancer.api.peer).
SETTINGS = "/api/v1/peer/settings"
# The peer's route that clears one of its persistence tables (balancer.api.peer).
PERSISTENCE = "/api/v1/peer/persistence/"


# A Secondary that joins waits this long at most for the Primary to be Active (the Primary's
# keepalived starts after the join is answered and takes about 3.5 adverts to take over).
JOIN_WAIT = 20.0
JOIN_POLL = 0.2
# A node whose keepalived starts waits this long at most for its engine to learn the peer's
# persistence tables (HAProxy alone waits out 5 s for an older worker that never comes).
LEARN_WAIT = 15.0
LEARN_POLL = 0.1


class PairError(Exception):
    """An HA operation this node cannot do now, in one line."""


def _standalone(_: trust.Trust | None, __: IPAddress | None) -> None:
    """A Cluster without listeners (tests of the application alone)."""


class Cluster:
    def __init__(
        self,
        store: Store,
        controller: Controller,
        data_dir: Path,
        *,
        secure: Secure = _standalone,
        clock: Callable[[], float] = time.monotonic,
        heartbeat: HeartbeatMaker = Heartbeat,
    ) -> None:
        self.store = store
        self.controller = controller
        self.data_dir = data_dir
        self.clock = clock
        self._secure = secure
        self._make_heartbeat = heartbeat
        self.heartbeat: Heartbeat | None = None
        # This node's unreplicated settings, for the peer and the drift check: one cache.
        self.facts = Gatherer(store, controller)
        self.peer: Peer | None = None
        self.link: Link | None = None
        # The Primary's sync with its Secondary while it runs; None otherwise.
        self.syncer: Syncer | None = None
        # Why this node's part in the pair does not run, in one line; None when it does.
        self.fault: str | None = None
        self._watching: asyncio.Task[None] | None = None
        # This node's engine's persistence replication, read every second while paired.
        self.replicated: replication.Watch | None = None
        self.split_brain: Watch | None = None  # while paired
        # Tells the peer which second factors signed users in here, while paired.
        self.told: Told | None = None
        # Held by the operator's Restart Heartbeat, switchover (pair.maintenance) and change
        # of the HA settings: one at a time (``operation``).
        self.operating = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def operation(self) -> AsyncIterator[None]:
        """An operator's action on the pair, refused (PairError) while another is under way: two
        at once (a form sent twice, two operators) could restart or reload both nodes'
        keepalived together and leave the floating IPs dark between them, or undo each other."""
        if self.operating.locked():
            raise PairError(
                "Restart Heartbeat, a switchover or a change of the HA settings is under way on "
                "this node: try again once it has ended"
            )
        async with self.operating:
            yield

    @property
    def pair(self) -> Pair | None:
        """This node's part in the pair, None while it stands alone."""
        return self.store.node_settings().pair

    async def start(self) -> None:
        """Run what this node's part in the pair needs; nothing when it stands alone."""
        pair = self.pair
        if pair is not None:
            await self._begin(pair)

    async def form(self, pair: Pair) -> None:
        """This node joins a pair (pairing's last step, on each node, which audits it): its
        ``Pair`` is kept and its part starts. The pair's files (``trust.directory``) must be in
        place."""
        await self._end(release=False)
        node = self.store.node_settings()
        self.store.save_node_settings(node.model_copy(update={"pair": pair}), author="system")
        await self._begin(pair, joining=True)

    async def dissolve(self, *, keep_floating_ips: bool) -> None:
        """Break Clustered Pair on this node (which the break audits): keepalived stops (the
        floating IPs leave this node unless ``keep_floating_ips``, when they stay as its own
        addresses), the pair's files go, and the node stands alone with the configuration and
        users it has."""
        pair = self.pair
        vips = self._vips()
        await self._end(release=True)
        if pair is None:
            return
        await self._replicate(None)
        if keep_floating_ips:
            await _keep(pair, vips)
        shutil.rmtree(trust.directory(self.data_dir), ignore_errors=True)
        node = self.store.node_settings()
        self.store.save_node_settings(node.model_copy(update={"pair": None}), author="system")

    async def stop(self) -> None:
        """The end of this run of the management service: stop hearing the peer and syncing,
        and leave keepalived running for the next run to adopt."""
        await self._end(release=False)

    async def release(self) -> None:
        """The node stops: keepalived stops gracefully first, so the peer takes the floating
        IPs at once; the caller stops the engine after this."""
        await self._end(release=True)

    async def restart_heartbeat(self) -> str:
        """Restart Heartbeat (Maintenance > Restart Services, on the Primary): keepalived
        restarts on both nodes, one at a time, the Passive node first, so that the Active one
        hands the floating IPs to a peer that is ready for them; what happened, in one line."""
        heartbeat, peer = self._running()
        if self.pair is None or self.pair.role != "primary":
            raise PairError("Restart Heartbeat is done on the Primary")
        here_first = heartbeat.status().state is not State.ACTIVE
        if here_first:
            await self.own_heartbeat("restart")
        came_back = await self._ask_peer(peer, "restart")
        if not here_first:
            if came_back == "fault":
                raise PairError(
                    "the peer came back in fault, so this node kept the floating IPs and its "
                    "keepalived was not restarted"
                )
            await self.own_heartbeat("restart")
        return "keepalived restarted on both nodes, one at a time"

    async def switchover(self) -> str:
        """Make the other node Active (the Active node's keepalived restarts gracefully and
        comes back Passive), asked on either node; what happened, in one line."""
        heartbeat, peer = self._running()
        if heartbeat.status().state is State.ACTIVE:
            # keepalived cannot tell: handing over to a peer that is not ready would leave the
            # floating IPs dark until this node took them back.
            # Asked now, not the link's last answer: just after a restart that is a second old.
            try:
                state = (await peer.status()).state
            except PeerError as error:
                raise PairError(f"switchover: {error}: nothing was done") from None
            if state != "passive":
                raise PairError(f"switchover: the peer is {state}, not Passive: nothing was done")
            await self._in_sync(peer)
            await self.own_heartbeat("switchover")
        else:
            await self._in_sync(peer)
            await self._ask_peer(peer, "switchover")
        return "the other node is now Active"

    async def _in_sync(self, peer: Peer) -> None:
        """Every user keeps their server across a switchover: the persistence tables are in
        sync first (replication.in_sync, up to 10 s; nothing is refused to clients meanwhile)."""
        try:
            why = await replication.in_sync(self.controller.engine, peer)
        except PeerError as error:
            raise PairError(f"switchover: {error}: nothing was done") from None
        if why is not None:
            raise PairError(
                f"switchover: the persistence tables are not in sync ({why}): nothing was done"
            )

    async def configure(
        self,
        advert_interval: float,
        preempt: bool,
        *,
        author: str,
        replication_port: int | None = None,
    ) -> str:
        """The pair's HA settings, which an operator changes on the Primary: both nodes'
        keepalived reload with this advert interval and preemption (a reload moves no floating
        IP) and their engines replicate on ``replication_port`` (None: the same), the Active
        node first (measured: a Passive node reloaded to adverts quicker than
        the Active one sends takes the floating IPs), and each node keeps them in its Pair.
        Refused by either node, or the Secondary unreachable, nothing changes on either; what
        was done, in one line. ``validate.Invalid`` names a value that is not valid. Given
        again, the same settings are sent again: a Secondary left behind is put right."""
        pair = self.pair
        if pair is None:
            raise PairError("this node is not in a pair")
        if pair.role == "secondary":
            raise PairError(
                "this node is the Secondary of an HA pair: the pair's HA settings are changed "
                f"on the Primary at {peer_at(pair)}"
            )
        async with self.operation():
            return await self._configure(pair, advert_interval, preempt, replication_port, author)

    async def _configure(
        self,
        pair: Pair,
        advert_interval: float,
        preempt: bool,
        replication_port: int | None,
        author: str,
    ) -> str:
        heartbeat, peer = self._running()
        wanted = _with(pair, advert_interval, preempt, replication_port)
        said = f"advert interval {wanted.advert_interval:g} s, preemption "
        said += "on" if wanted.preempt else "off"
        if replication_port is not None:
            said += f", replication port {wanted.replication_port}"

        async def take(node: str, settings: Pair) -> str | None:
            """Why ``node`` (this one or the peer) did not take ``settings``; None once it has."""
            body = {
                "advert_interval": settings.advert_interval,
                "preempt": settings.preempt,
                "replication_port": settings.replication_port,
            }
            try:
                if node == "this node":
                    await self._take(heartbeat, settings)
                else:
                    await peer.call("PUT", SETTINGS, body)
            except (HeartbeatError, PeerError, EngineError) as error:
                return str(error)
            return None

        nodes = ["this node", "the peer"]
        if heartbeat.status().state is not State.ACTIVE:
            nodes.reverse()
        failed = await take(nodes[0], wanted)
        if failed is None:
            failed = await take(nodes[1], wanted)
            if failed is not None and (undone := await take(nodes[0], pair)) is not None:
                raise PairError(f"{failed}; and {nodes[0]} keeps the new settings: {undone}")
        if failed is not None:
            raise PairError(f"{failed}: nothing was changed on either node")
        if wanted != pair:
            node = self.store.node_settings()
            self.store.save_node_settings(node.model_copy(update={"pair": wanted}), author=author)
        return f"{said}, on both nodes"

    async def take_settings(
        self,
        advert_interval: float,
        preempt: bool,
        *,
        author: str,
        replication_port: int | None = None,
    ) -> None:
        """The pair's HA settings from the Primary (``configure``), on the Secondary: its
        keepalived reloads with them, its engine replicates on their port and its Pair keeps
        them; PairError says why not."""
        pair = self.pair
        if pair is None or pair.role != "secondary":
            raise PairError("only a Secondary takes the pair's HA settings from its peer")
        wanted = _with(pair, advert_interval, preempt, replication_port)
        if self.heartbeat is not None:  # else the next start runs them
            try:
                await self._take(self.heartbeat, wanted)
            except (HeartbeatError, EngineError) as error:
                raise PairError(str(error)) from None
        node = self.store.node_settings()
        self.store.save_node_settings(node.model_copy(update={"pair": wanted}), author=author)

    async def _take(self, heartbeat: Heartbeat, settings: Pair) -> None:
        """This node runs the pair's ``settings``: keepalived reloads with them, and the
        engine moves to another replication port if they name one (EngineError if it cannot)."""
        await heartbeat.reconfigure(settings)
        pair = self.pair
        if pair is not None and settings.replication_port != pair.replication_port:
            pair_dir = trust.directory(self.data_dir)
            await self.controller.engine.replicate(_replication(settings, pair_dir))

    async def clear_on_peer(self, service: str) -> dict[str, int | str] | None:
        """An operator's clear of ``service``'s persistence table, made on this node, made on
        the peer's engine too (HAProxy's peers carry no removal, and a table cleared on one
        node alone would be taught back to it): ``{"cleared": N}``, ``{"error": why}``, or
        None standalone."""
        if self.pair is None:
            return None
        if self.peer is None:
            return {"error": self.fault or "the pair's link does not run"}
        try:
            answer = await self.peer.call("DELETE", PERSISTENCE + service)
        except PeerError as error:
            return {"error": str(error)}
        cleared = answer.get("cleared") if isinstance(answer, dict) else None
        return {"cleared": cleared} if isinstance(cleared, int) else {"error": "no answer"}

    async def own_heartbeat(self, action: str) -> None:
        """Restart or switch over this node's keepalived (the peer's route asks it too)."""
        heartbeat, _ = self._running()
        try:
            await (heartbeat.switchover() if action == "switchover" else heartbeat.restart())
        except HeartbeatError as error:
            raise PairError(str(error)) from None

    def _running(self) -> tuple[Heartbeat, Peer]:
        if self.heartbeat is None or self.peer is None:
            raise PairError(self.fault or "this node is not in a pair")
        return self.heartbeat, self.peer

    async def _ask_peer(self, peer: Peer, action: str) -> str | None:
        """Have the peer restart or switch over its keepalived; the state it came back in."""
        try:
            answer = await peer.call("POST", HEARTBEAT + action, timeout=HEARTBEAT_WAIT)
        except PeerError as error:
            raise PairError(f"the peer's keepalived: {error}") from None
        state = answer.get("state") if isinstance(answer, dict) else None
        return state if isinstance(state, str) else None

    def view(self) -> PairView | None:
        """The pair as this node sees it, None while it stands alone."""
        pair = self.pair
        if pair is None:
            return None
        link = self.link
        peer = None if link is None else link.view
        if peer is not None and self.syncer is not None:
            # The Secondary as the Primary sees it: its sync is what the Primary's says.
            peer = replace(peer, sync=self.syncer.said())
        return PairView(
            this=self.this(pair, peer),
            peer=peer,
            link=None if link is None else link.link(),
            split_brain=None if self.split_brain is None else self.split_brain.view(),
        )

    def this(self, pair: Pair, peer: NodeView | None = None) -> NodeView:
        """This node as the status bar, System Overview and the peer see it."""
        applied = self.store.applied()
        revision = None if applied is None else applied.revision
        if self.fault is not None:
            state = "fault"
        elif self.heartbeat is None:
            state = "unknown"
        else:
            state = self.heartbeat.status().state.value.lower()
        return NodeView(
            address=str(pair.local_address),
            role=pair.role,
            state=state,
            revision=revision,
            engine=self.controller.engine.name,
            engine_error=self.controller.engine_error,
            sync="owner" if pair.role == "primary" else _behind(revision, peer),
            replication=None if self.replicated is None else self.replicated.said,
        )

    async def _begin(self, pair: Pair, *, joining: bool = False) -> None:
        self.fault = None
        try:
            pair_trust = trust.load(
                trust.directory(self.data_dir), pair.local_address, now=datetime.now(UTC)
            )
        except trust.TrustError as error:
            self._faulty(f"the pair's files: {error}")
            return
        self._secure(pair_trust, pair.peer_address)
        await self._replicate(_replication(pair, trust.directory(self.data_dir)))
        self.peer = Peer(pair_trust, pair.peer_address, pair.peer_port)
        self.link = Link(self.peer, clock=self.clock)
        self.link.start()
        self.replicated = replication.Watch(self.controller)
        self.replicated.start()
        self.told = Told(self.store, self.peer)
        self.told.start()
        if pair.role == "primary":
            self.syncer = Syncer(self.store, self.controller, self.peer)
            await self.syncer.start()
        else:
            self.controller.forward = forwarding(self.peer)
        self.heartbeat = self._make_heartbeat(
            self.data_dir, pair, self.controller.events.publish, self.store.audit
        )
        self.split_brain = Watch(
            lambda: self.this(pair).state,
            self.link,
            self._vips,
            self.controller.events.publish,
            self.store.audit,
        )
        self.split_brain.start()
        # Subscribed before keepalived starts: no commit falls in between.
        subscription = self.controller.events.subscribe()
        loop = asyncio.get_running_loop()
        joins = joining and pair.role == "secondary"
        if joins or await self._learning():
            self._watching = loop.create_task(self._later(self.heartbeat, subscription, joins))
            return
        await self._start(self.heartbeat)
        self._watching = loop.create_task(self._follow(subscription))

    async def _replicate(self, replication: Replication | None) -> None:
        """Have the engine replicate persistence with the peer's (None: no longer); an engine
        that cannot is logged and audited, and the pair runs on without it."""
        try:
            await self.controller.engine.replicate(replication)
        except EngineError as error:
            log.error("persistence replication: %s", error, extra={"event": "replication_fault"})
            self.store.audit(
                author="system", action="replication_fault", detail={"error": str(error)}
            )

    async def _learning(self) -> bool:
        """Whether keepalived is to start (not adopted: it does not run) while the engine
        has not yet learnt the peer's persistence tables."""
        if await self._learnt():
            return False
        return self.heartbeat is not None and self.heartbeat.keepalived.pid() is None

    async def _start(self, heartbeat: Heartbeat) -> None:
        try:
            await heartbeat.start(self._vips())
        except HeartbeatError as error:
            self._faulty(str(error))

    async def _later(self, heartbeat: Heartbeat, subscription: Subscription, joins: bool) -> None:
        """Start keepalived once it is safe to, then follow. A Secondary that ``joins`` waits
        for the Primary to say it is Active (or JOIN_WAIT): the Primary carries the traffic
        while the pair forms, and a Secondary whose keepalived started first would take the
        floating IPs from it for good (measured: 8 pairings in 8 without this wait). Every
        node then waits for its engine to learn the peer's persistence tables (or LEARN_WAIT),
        so that a node which takes the floating IPs sends every client to its server."""
        with subscription:
            if joins and not await self._until(JOIN_WAIT, JOIN_POLL, self._primary_active):
                log.warning(
                    "the Primary did not say it is Active within %g s: keepalived starts anyway",
                    JOIN_WAIT,
                )
            began = self.clock()
            if await self._until(LEARN_WAIT, LEARN_POLL, self._learnt):
                log.info(
                    "the peer's persistence tables learnt in %.2f s: keepalived starts",
                    self.clock() - began,
                    extra={"event": "replication_synced"},
                )
            else:
                log.warning(
                    "the peer's persistence tables were not learnt within %g s: keepalived "
                    "starts anyway",
                    LEARN_WAIT,
                    extra={"event": "replication_not_synced"},
                )
            await self._start(heartbeat)
            await self._follow(subscription)

    def _primary_active(self) -> bool:
        primary = None if self.link is None else self.link.view
        return primary is not None and primary.state == "active"

    async def _learnt(self) -> bool:
        """Whether the engine has learnt the peer's persistence tables, or does not replicate
        (an engine that does not answer has not)."""
        try:
            status = await self.controller.engine.replication()
        except EngineError:
            return False
        return status is None or status.synced

    @staticmethod
    async def _until(wait: float, poll: float, ready: Callable[[], bool | Awaitable[bool]]) -> bool:
        """Whether ``ready()`` said True within ``wait`` seconds, asked every ``poll``."""
        loop = asyncio.get_running_loop()
        until = loop.time() + wait
        while True:
            answer = ready()
            if answer if isinstance(answer, bool) else await answer:
                return True
            if loop.time() >= until:
                return False
            await asyncio.sleep(poll)

    async def _end(self, *, release: bool) -> None:
        split_brain, self.split_brain = self.split_brain, None
        if split_brain is not None:
            await split_brain.stop()
        watching, self._watching = self._watching, None
        if watching is not None:
            watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watching
        heartbeat, self.heartbeat = self.heartbeat, None
        if heartbeat is not None:
            if release:
                try:
                    await heartbeat.stop()
                except HeartbeatError as error:
                    log.error("keepalived did not stop cleanly: %s", error)
            else:
                await heartbeat.close()
        self.controller.forward = None
        syncer, self.syncer = self.syncer, None
        if syncer is not None:
            await syncer.stop()
        link, self.link = self.link, None
        if link is not None:
            await link.stop()
        replicated, self.replicated = self.replicated, None
        if replicated is not None:
            await replicated.stop()
        told, self.told = self.told, None
        if told is not None:
            await told.stop()
        peer, self.peer = self.peer, None
        if peer is not None:
            await peer.aclose()
        self._secure(None, None)

    async def _follow(self, subscription: Subscription) -> None:
        """The floating IPs follow the revision this node runs; an engine that runs again
        (perhaps another engine, chosen in the node's settings) is told to replicate."""
        with subscription:
            async for event in subscription:
                if isinstance(event, EngineChanged) and event.error is None:
                    pair = self.pair
                    if pair is not None:
                        await self._replicate(_replication(pair, trust.directory(self.data_dir)))
                    continue
                if not isinstance(event, RevisionApplied | Missed) or self.heartbeat is None:
                    continue
                try:
                    await self.heartbeat.update(self._vips())
                except HeartbeatError as error:
                    self._faulty(str(error))

    def _vips(self) -> tuple[str, ...]:
        applied = self.store.applied()
        if applied is None:
            return ()
        return floating_ips(self.store.revision(applied.revision).config)

    def _faulty(self, error: str) -> None:
        if error == self.fault:
            return
        self.fault = error
        log.error("HA pair: %s", error, extra={"event": "pair_fault"})
        self.store.audit(author="system", action="pair_fault", detail={"error": error})


def _replication(pair: Pair, pair_dir: Path) -> Replication:
    """What the engine needs to replicate persistence with the peer's: the addresses, the
    port and the pair's files in ``pair_dir`` (``trust.directory``)."""
    return Replication(
        local=str(pair.local_address),
        peer=str(pair.peer_address),
        port=pair.replication_port,
        certificate=pair_dir / trust.NODE_FILE,
        key=pair_dir / trust.NODE_KEY_FILE,
        authority=pair_dir / trust.CA_FILE,
    )


def _with(
    pair: Pair, advert_interval: float, preempt: bool, replication_port: int | None = None
) -> Pair:
    """``pair`` with these HA settings, checked as a Pair is (``validate.Invalid``)."""
    settings: dict[str, object] = {"advert_interval": advert_interval, "preempt": preempt}
    if replication_port is not None:
        settings["replication_port"] = replication_port
    return parse_as(Pair, {**pair.model_dump(), **settings})


def _behind(revision: int | None, primary: NodeView | None) -> str:
    """The Secondary's own sync, from what the Primary last said it runs."""
    if primary is None:
        return "unknown: the Primary has not been heard"
    if primary.revision == revision:
        return "in sync"
    if primary.revision is not None and revision is not None and primary.revision > revision:
        return f"behind by {primary.revision - revision}"
    return f"runs revision {revision}, the Primary {primary.revision}"


async def _keep(pair: Pair, vips: tuple[str, ...]) -> None:
    """The floating IPs as this node's own addresses, once keepalived has let them go: the node
    that carried the traffic goes on carrying it when the pair breaks."""
    try:
        status, output = await tool.run(["ip", "-j", "address", "show"], IP_TIMEOUT)
        if status != 0:
            raise HeartbeatError(output.strip()[:200])
        interface = interface_of(output, str(pair.local_address))
        for vip in vips:
            prefix = 128 if ":" in vip else 32
            added, said = await tool.run(
                ["ip", "address", "add", f"{vip}/{prefix}", "dev", interface], IP_TIMEOUT
            )
            if added != 0 and "File exists" not in said:
                raise HeartbeatError(f"{vip}: {said.strip()[:200]}")
    except (HeartbeatError, TimeoutError) as error:
        log.error("break: the floating IPs could not be kept: %s", error or "ip timed out")
