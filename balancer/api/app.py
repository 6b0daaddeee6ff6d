"""The REST API's routes, by noun, named as the guide names things: virtual services, real
servers, revisions (changes, commit, backup, restore), users and the system."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fastapi import FastAPI

from balancer import software
from balancer.api import (
    account,
    alerts,
    audit,
    directory,
    ha,
    heartbeat,
    history,
    lockdown,
    metrics,
    peer,
    replica,
    revisions,
    servers,
    services,
    support,
    system,
    two_factor,
    update,
    users,
)
from balancer.api.edits import Edits
from balancer.controller import Controller
from balancer.front.access import Access
from balancer.pair.cluster import Cluster
from balancer.pair.syncer import Syncer
from balancer.store import Store
from balancer.system import System


def install(
    app: FastAPI,
    store: Store,
    controller: Controller,
    cluster: Cluster,
    figures: System,
    data_dir: Path,
    shutdown: Callable[[bool], None],
    access: Access,
) -> None:
    """The API's routes, under /api/v1."""
    edits = Edits(controller)

    def syncer() -> Syncer | None:
        return cluster.syncer

    for router in (
        system.router(store, controller, figures, data_dir, shutdown),
        services.router(edits, controller, cluster),
        servers.router(edits, controller),
        revisions.router(edits, controller, syncer),
        users.router(store),
        account.router(access),
        two_factor.router(store),
        alerts.router(store),
        directory.router(store),
        audit.router(store),
        lockdown.router(store),
        peer.status_router(cluster),
        heartbeat.router(cluster),
        ha.router(cluster),
        ha.peer_router(cluster),
        replica.router(controller, syncer),
        metrics.router(controller, cluster),
        history.router(data_dir),
        support.router(store, controller, cluster),
        update.router(store, software.of(data_dir)),
    ):
        app.include_router(router)
