"""The management daemon, the composition root: it builds the store, the engine, the controller
and the application (``balancer.app``), owns every task, and shuts down in order.

The API and the WebUI are one application, served on the HTTP front's two kinds of listener.
The Unix socket in the data directory is reachable only by root (mode 0600): local
administration needs no password. The network listener (HTTPS on 9443, and plain HTTP if the
node asks for it) lets in only signed-in users and API keys.

Restart Services can restart the management service in place: the listeners close once the
answers in progress are sent, the engine is let go of and kept running (no connection drops),
and everything starts again with the node settings saved since, such as new service socket
addresses. Sessions live in the service's memory, so everyone signs in again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import ssl
from pathlib import Path
from typing import Any

from balancer import engines, events, first_start, history, logs, management, software, validate
from balancer.alerts import subscriber
from balancer.app import create_app
from balancer.certificates import ServedCertificate
from balancer.client import api_socket
from balancer.controller import Controller
from balancer.front.gate import local
from balancer.front.listeners import (
    Listener,
    PairTLS,
    listener,
    network_sockets,
    unix_socket,
)
from balancer.front.lockdown import Lockdown
from balancer.model import NodeSettings
from balancer.pair.cluster import Cluster
from balancer.pair.heartbeat import DIRECTORY as KEEPALIVED
from balancer.store import Store

log = logging.getLogger("balancer.daemon")


async def serve(data_dir: Path, node_changes: dict[str, Any] | None = None) -> Path | None:
    """Run until asked to stop; ``node_changes`` (engine, ports, listen address) are kept.
    After a Software Update or a Roll back: the Python of the version to run instead."""
    # Every path the node uses comes from here, made absolute once: HAProxy reads a relative
    # socket path as an address, and the engines' processes may start from another directory.
    data_dir = data_dir.resolve()
    database = first_start.prepare(data_dir)
    logs.setup(data_dir / "logs" / "balancer.log", "appliance")
    with Store(database) as store:
        kept = store.node_settings()
        node = validate.parse_as(NodeSettings, {**kept.model_dump(), **(node_changes or {})})
        # Taken before anything is kept: a port that cannot be had changes nothing.
        network: list[tuple[socket.socket, bool]] | None = network_sockets(node)
        await _keep(store, data_dir, kept, node)
        password = first_start.first_password(store)
        if password is not None:
            # Shown once on the terminal that started the appliance; never logged or kept.
            print(first_start.announce(password), flush=True)
            log.info("first start: a password was made for the WebUI user and shown once")
        certificate = ServedCertificate(first_start.certificate(data_dir, node.hostname))
        # The sockets listen already: connections wait in their backlog until served.
        print(first_start.ready(node, certificate.info().fingerprint), flush=True)
        # Each round is one run of the management service; Restart Services starts another.
        while network is not None:
            network = await _run(store, data_dir, certificate, node, network)
            node = store.node_settings()
            switched = software.Software(data_dir).next_python()
            if network is not None and switched is not None:
                for sock, _ in network:  # the other version opens them again
                    sock.close()
                return switched
    return None


async def _run(
    store: Store,
    data_dir: Path,
    certificate: ServedCertificate,
    node: NodeSettings,
    network: list[tuple[socket.socket, bool]],
) -> list[tuple[socket.socket, bool]] | None:
    """Serve ``network`` (sockets, and whether each is HTTPS) and the Unix socket until asked
    to stop (None) or to restart: then the network sockets of the next round."""
    loop = asyncio.get_running_loop()
    controller = Controller(store, engines.engine(node.engine, data_dir, node.workers))
    # Subscribed before the start, so that what the start applies or meets is logged too.
    logged = controller.events.subscribe()
    alerted = controller.events.subscribe()
    told = controller.events.subscribe()  # the history keeps each health change's reason
    await controller.start()
    stop_engine = False
    restart = False
    releasing: asyncio.Task[None] | None = None

    def shutdown(engine: bool) -> None:
        nonlocal stop_engine, releasing
        stop_engine = engine
        if not restart and releasing is None:
            # A stop hands the floating IPs to the peer at once, not after the listeners end:
            # they wait for their connections to close, the peer's link among them (0.7 s).
            releasing = loop.create_task(cluster.release())
        for server, _ in servers:
            server.should_exit = True

    def restarting() -> None:
        nonlocal restart
        restart = True
        shutdown(False)

    # Paired, the HTTPS listeners are also where the peer calls, over the pair's mutual TLS.
    pair_tls = PairTLS()
    cluster = Cluster(store, controller, data_dir, secure=pair_tls.set)
    app = create_app(store, controller, cluster, data_dir, shutdown, pair_tls=pair_tls)
    servers: list[tuple[Listener, socket.socket]] = [
        (listener(local(app)), unix_socket(api_socket(data_dir))),
        # Behind management_allow on the network alone: the Unix socket can always undo it.
        *(
            (listener(Lockdown(app, store), certificate.path if tls else None), sock)
            for sock, tls in network
        ),
    ]
    contexts: list[ssl.SSLContext] = []
    for server, _ in servers:
        server.config.load()  # makes the TLS context now, so a new certificate can reach it
        if server.config.ssl is not None:
            contexts.append(server.config.ssl)
            certificate.serve_with(server.config.ssl)
            pair_tls.serve_on(server.config.ssl)
    await cluster.start()
    management.provide(app, management.Management(node, certificate, restarting))
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, shutdown, False)
    log.info(
        "management daemon up",
        extra={"event": "start", "engine": node.engine, "https_port": node.https_port},
    )
    logging_events = loop.create_task(_log_events(logged))
    alerting = loop.create_task(subscriber.run(alerted, store))
    sampling = loop.create_task(history.sample(data_dir, controller.status, cluster.view, told))
    online = software.Software(data_dir).watch(lambda: store.node_settings().update_url)
    watching = loop.create_task(online)
    rotating = loop.create_task(logs.keep_rotated((data_dir / "logs", data_dir / KEEPALIVED)))
    try:
        async with asyncio.TaskGroup() as tasks:
            for server, sock in servers:
                tasks.create_task(server.serve(sockets=[sock]))
    finally:
        for context in contexts:
            certificate.forget(context)
        # A restart leaves keepalived to the next run; a stop has the peer take the floating
        # IPs before the engine goes (the other order answers clients with resets).
        await (cluster.stop() if restart else releasing or cluster.release())
        await controller.close(stop_engine=stop_engine)
        for task in (logging_events, sampling, alerting, watching, rotating):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with logged:
            for event in logged.pending():  # what the last moments published, not yet read
                _log_event(event)
        with contextlib.suppress(FileNotFoundError):
            api_socket(data_dir).unlink()
        log.info("management daemon stopped", extra={"stop_engine": stop_engine})
    if not restart:
        return None
    return _rebound(store, node)


async def _log_events(subscription: events.Subscription) -> None:
    """Each event of the node as one line of balancer.log, with its fields to filter by."""
    async for event in subscription:
        _log_event(event)


def _log_event(event: events.Event | events.Missed) -> None:
    match event:
        case (
            events.EngineChanged(error=str())
            | events.SplitBrain(raised=True)
            | events.CommitFailed()
        ):
            level = logging.ERROR
        case events.HealthChanged(health="down") | events.Missed():
            level = logging.WARNING
        case _:
            level = logging.INFO
    log.log(
        level,
        events.said(event),
        extra={"event": events.kind(event), **events.fields(event)},
    )


def _rebound(store: Store, previous: NodeSettings) -> list[tuple[socket.socket, bool]]:
    """The sockets of the saved node settings, for a restart; if they cannot be had, those of
    the settings that ran until now, which are saved back, so the appliance stays reachable."""
    saved = store.node_settings()
    try:
        return network_sockets(saved)
    except OSError as error:
        log.error(
            "restart: the saved service socket addresses cannot be used (%s); kept the previous",
            error,
        )
        store.audit(
            author="system",
            action="node_settings_refused",
            detail={"error": str(error), "settings": saved.model_dump(mode="json")},
        )
        store.save_node_settings(
            saved.model_copy(
                update={
                    "https_port": previous.https_port,
                    "http_port": previous.http_port,
                    "listen_address": previous.listen_address,
                }
            ),
            author="system",
        )
        return network_sockets(previous)


async def _keep(store: Store, data_dir: Path, node: NodeSettings, changed: NodeSettings) -> None:
    """Save the settings ``balancer serve`` was given, for this start and the next."""
    if changed == node:
        return
    if changed.engine != node.engine:
        # The old engine holds the VIPs' ports: it stops before the new one takes them.
        await engines.engine(node.engine, data_dir).stop()
        log.info("engine changed", extra={"event": "engine", "engine": changed.engine})
    store.save_node_settings(changed, author="local")
