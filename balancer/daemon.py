"""The management daemon, the composition root: it builds the store, the engine, the controller
and the API, owns every task, and shuts down in order.

The API and the WebUI are one application, served on two kinds of listener. The Unix socket in
the data directory is reachable only by root (mode 0600): local administration needs no
password. The network listener (HTTPS on 9443, and plain HTTP if the node asks for it) lets in
only signed-in users and API keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from pathlib import Path
from typing import Any

from balancer import engines, first_start, logs, validate
from balancer.api.app import create_app
from balancer.api.gate import local
from balancer.api.listeners import Listener, listener, network_socket, unix_socket
from balancer.client import api_socket
from balancer.controller import Controller
from balancer.model import NodeSettings
from balancer.store import Store

log = logging.getLogger("balancer.daemon")


async def serve(data_dir: Path, node_changes: dict[str, Any] | None = None) -> None:
    """Run until asked to stop; ``node_changes`` (engine, ports, listen address) are kept."""
    database = first_start.prepare(data_dir)
    logs.setup(data_dir / "logs" / "balancer.log", "appliance")
    with Store(database) as store:
        node = await _node_settings(store, data_dir, node_changes or {})
        password = first_start.first_password(store)
        if password is not None:
            # Shown once on the terminal that started the appliance; never logged or kept.
            print(first_start.announce(password), flush=True)
            log.info("first start: a password was made for the WebUI user and shown once")
        certificate = first_start.certificate(data_dir, node.hostname)
        # Every port is taken before anything starts, so a port in use changes nothing.
        network: list[tuple[socket.socket, Path | None]] = [
            (network_socket(node.listen_address, node.https_port), certificate)
        ]
        if node.http_port is not None:
            network.append((network_socket(node.listen_address, node.http_port), None))
        controller = Controller(store, engines.engine(node.engine, data_dir))
        await controller.start()
        stop_engine = False

        def shutdown(engine: bool) -> None:
            nonlocal stop_engine
            stop_engine = engine
            for server, _ in servers:
                server.should_exit = True

        app = create_app(store, controller, data_dir, shutdown)
        servers: list[tuple[Listener, socket.socket]] = [
            (listener(local(app)), unix_socket(api_socket(data_dir))),
            *((listener(app, tls), sock) for sock, tls in network),
        ]
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, shutdown, False)
        log.info(
            "management daemon up",
            extra={"event": "start", "engine": node.engine, "https_port": node.https_port},
        )
        try:
            async with asyncio.TaskGroup() as tasks:
                for server, sock in servers:
                    tasks.create_task(server.serve(sockets=[sock]))
        finally:
            await controller.close(stop_engine=stop_engine)
            with contextlib.suppress(FileNotFoundError):
                api_socket(data_dir).unlink()
            log.info("management daemon stopped", extra={"stop_engine": stop_engine})


async def _node_settings(store: Store, data_dir: Path, changes: dict[str, Any]) -> NodeSettings:
    node = store.node_settings()
    changed = validate.parse_as(NodeSettings, {**node.model_dump(), **changes})
    if changed == node:
        return node
    if changed.engine != node.engine:
        # The old engine holds the VIPs' ports: it stops before the new one takes them.
        await engines.engine(node.engine, data_dir).stop()
        log.info("engine changed", extra={"event": "engine", "engine": changed.engine})
    store.save_node_settings(changed, author="local")
    return changed
