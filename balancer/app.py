"""The management application: the HTTP front (``balancer.front``) with the REST API
(``balancer.api``) and the WebUI (``balancer.web``) on it. Neither of the two knows the other;
they meet here, and the daemon serves the result on its listeners.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from fastapi import FastAPI

from balancer.api.app import install as install_api
from balancer.controller import Controller
from balancer.front import errors
from balancer.front.access import Access
from balancer.front.gate import Gate
from balancer.front.listeners import PairTLS
from balancer.pair.cluster import Cluster
from balancer.store import Store
from balancer.system import System
from balancer.web import install as install_web


def create_app(
    store: Store,
    controller: Controller,
    cluster: Cluster,
    data_dir: Path,
    shutdown: Callable[[bool], None],
    *,
    clock: Callable[[], float] = time.monotonic,
    pair_tls: PairTLS | None = None,
) -> FastAPI:
    app = FastAPI(
        title="Balancer",
        version="1",
        description="Load balancing for CyberArk PSM and any TCP service.",
        docs_url="/api/docs",
        openapi_url="/api/v1/openapi.json",
        redoc_url=None,
        responses=errors.RESPONSES,
    )
    # The API's answers to errors first: the WebUI puts its pages in front of them.
    errors.install(app)
    # One reader for the API and the overview: bandwidth is the rate since its last reading.
    system = System()
    node = store.node_settings()
    access = Access(
        store,
        idle_timeout=node.session_idle_timeout,
        max_lifetime=node.session_max_lifetime,
        clock=clock,
    )
    install_api(app, store, controller, cluster, system, data_dir, shutdown, access)
    refused = install_web(app, store, controller, cluster, access, system)
    # The HTTPS listeners' pair TLS (daemon), whose peer alone the gate lets into /api/v1/peer/.
    app.add_middleware(Gate, access=access, pair=pair_tls, refused=refused)
    return app
