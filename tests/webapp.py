"""The management application in process, on a fake engine: for tests of the API's gate and
the WebUI that need no data plane. Requests are network requests unless marked local."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from fastapi.testclient import TestClient

from balancer import users
from balancer.app import create_app
from balancer.controller import Controller
from balancer.engines import EngineError, Replication
from balancer.front.gate import SIGN_IN, local
from balancer.model import Config
from balancer.model.types import format_ports
from balancer.pair.cluster import Cluster
from balancer.plan import Plan
from balancer.state import (
    EngineStatus,
    Health,
    RealServerStatus,
    ReplicationStatus,
    VirtualServiceStatus,
)
from balancer.store import Store
from balancer.validate import Problem
from tests.appliance import free_port, wait_for

PASSWORD = "the on-call password"


class FakeEngine:
    """Runs nothing: reports every applied real server up, unless told a reason it failed."""

    name = "fake"

    def __init__(self) -> None:
        self.config = Config()
        self.revision: int | None = None
        self.failed: dict[str, str] = {}  # "service/server" -> reason
        self.unreachable: str | None = None
        self.replicated: list[Replication | None] = []  # what each replicate() was given

    async def attach(self) -> int | None:
        return self.revision

    def problems(self, config: Config, before: Config) -> list[Problem]:
        return []

    async def apply(self, plan: Plan) -> None:
        self.config, self.revision = plan.config, plan.revision

    async def status(self) -> EngineStatus:
        if self.unreachable is not None:
            raise EngineError(self.unreachable)
        services = []
        for vs in self.config.virtual_services:
            servers = []
            for rs in vs.real_servers:
                reason = self.failed.get(f"{vs.label}/{rs.label}")
                servers.append(
                    RealServerStatus(
                        label=rs.label,
                        ip=str(rs.ip),
                        port=rs.port,
                        weight=rs.weight,
                        state=rs.state.value,
                        health=Health.DOWN if reason else Health.UP,
                        reason=reason or "expected PASS, got PASS",
                        since=0.0,
                    )
                )
            services.append(
                VirtualServiceStatus(
                    label=vs.label,
                    ip=str(vs.ip),
                    ports=format_ports(vs.ports),
                    real_servers=tuple(servers),
                )
            )
        return EngineStatus(
            engine="fake",
            pid=os.getpid(),
            started=0.0,
            revision=self.revision,
            virtual_services=tuple(services),
        )

    async def configuration(self) -> str:
        return self.config.model_dump_json()

    async def persistence(self, service: str) -> list[dict[str, Any]]:
        return []

    async def clear_persistence(self, service: str) -> int:
        return 0

    async def replicate(self, replication: Replication | None) -> None:
        self.replicated.append(replication)

    async def replication(self) -> ReplicationStatus | None:
        return None

    async def detach(self) -> None:
        pass

    async def stop(self) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class WebApp:
    network: TestClient  # over HTTPS, as a browser on another machine
    local: TestClient  # as the `balancer` command on the Unix socket
    store: Store
    engine: FakeEngine
    clock: Clock
    stopped: list[bool] = field(default_factory=list)

    def sign_in(
        self, client: TestClient | None = None, user: str = "loadbalancer", password: str = PASSWORD
    ) -> str:
        """Sign in through the form, as a browser does; returns the page's CSRF token."""
        client = client or self.network
        reply = client.post(
            SIGN_IN,
            data={"username": user, "password": password, "csrf_token": sign_in_token(client)},
            follow_redirects=False,
        )
        assert reply.status_code == 303, reply.text
        return csrf_of(client.get("/lbadmin/").text)


def sign_in_token(client: TestClient) -> str:
    return csrf_of(client.get(SIGN_IN).text)


def csrf_of(page: str) -> str:
    start = page.index('name="csrf_token" value="') + len('name="csrf_token" value="')
    return page[start : page.index('"', start)]


def _app(tmp_path: Path, store: Store, clock: Clock) -> tuple[Any, FakeEngine, list[bool]]:
    engine = FakeEngine()
    users.add_user(store, "loadbalancer", PASSWORD, author="test")
    controller = Controller(store, engine)
    stopped: list[bool] = []
    app = create_app(
        store,
        controller,
        Cluster(store, controller, tmp_path),
        tmp_path,
        stopped.append,
        clock=clock,
    )
    return app, engine, stopped


@contextmanager
def webapp(tmp_path: Path, *, wall_clock: bool = False) -> Iterator[WebApp]:
    """``wall_clock``: the store's clock is the test's too (two-factor codes are judged by it;
    otherwise the store stamps with the real time)."""
    clock = Clock()
    with Store(tmp_path / "balancer.db", **({"clock": clock} if wall_clock else {})) as store:
        app, engine, stopped = _app(tmp_path, store, clock)
        with (
            TestClient(app, base_url="https://balancer.test") as network,
            TestClient(local(app), base_url="http://balancer") as local_client,
        ):
            yield WebApp(network, local_client, store, engine, clock, stopped)


@dataclass
class Served:
    url: str  # the WebUI, over plain HTTP on loopback
    store: Store
    clock: Clock


@contextmanager
def served(tmp_path: Path) -> Iterator[Served]:
    """The application in process on the test's clock (the store's too), served by uvicorn on
    a loopback port in a thread of its own: for a real browser. Stopped on leaving."""
    clock = Clock()
    with Store(tmp_path / "balancer.db", clock=clock) as store:
        app, _, _ = _app(tmp_path, store, clock)
        port = free_port(["127.0.0.1"])
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
        )
        thread = threading.Thread(target=server.run, name="served", daemon=True)
        thread.start()
        try:
            wait_for("the served application", lambda: server.started, timeout=20.0)
            yield Served(f"http://127.0.0.1:{port}/lbadmin/", store, clock)
        finally:
            server.should_exit = True
            thread.join(timeout=20.0)
