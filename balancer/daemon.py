"""The management daemon, the composition root: it builds the store, the engine, the controller
and the API, owns every task, and shuts down in order.

The API listens on a Unix socket in the data directory, reachable only by root (mode 0600):
local administration needs no password. The WebUI and remote API on 9443 build on the same app.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from pathlib import Path

import uvicorn

from balancer import engines, logs
from balancer.api.app import create_app
from balancer.client import api_socket
from balancer.controller import Controller
from balancer.store import Store

log = logging.getLogger("balancer.daemon")


def _listen(path: Path) -> socket.socket:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)  # never world-connectable, not even for an instant
    try:
        sock.bind(str(path))
    finally:
        os.umask(old)
    sock.listen(128)
    return sock


async def serve(data_dir: Path, engine_name: str | None = None) -> None:
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    logs.setup(data_dir / "logs" / "balancer.log", "appliance")
    with Store(data_dir / "balancer.db") as store:
        node = store.node_settings()
        if engine_name is not None and engine_name != node.engine:
            # The old engine holds the VIPs' ports: it stops before the new one takes them.
            await engines.engine(node.engine, data_dir).stop()
            node = node.model_copy(update={"engine": engine_name})
            store.save_node_settings(node, author="local")
            log.info("engine changed", extra={"event": "engine", "engine": engine_name})
        controller = Controller(store, engines.engine(node.engine, data_dir))
        await controller.start()
        stop_engine = False

        def shutdown(engine: bool) -> None:
            nonlocal stop_engine
            stop_engine = engine
            server.should_exit = True

        app = create_app(store, controller, data_dir, shutdown)
        server = uvicorn.Server(
            uvicorn.Config(app, log_config=None, access_log=False, lifespan="off")
        )
        sock = _listen(api_socket(data_dir))
        log.info("management daemon up", extra={"event": "start", "engine": node.engine})
        try:
            await server.serve(sockets=[sock])
        finally:
            await controller.close(stop_engine=stop_engine)
            with contextlib.suppress(FileNotFoundError):
                api_socket(data_dir).unlink()
            log.info("management daemon stopped", extra={"stop_engine": stop_engine})
