"""The management application in process, on a fake engine: for tests of the API's gate and
the WebUI that need no data plane. Requests are network requests unless marked local."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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

PASSWORD = "the operator's password"


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


@contextmanager
def webapp(tmp_path: Path) -> Iterator[WebApp]:
    clock = Clock()
    engine = FakeEngine()
    with Store(tmp_path / "balancer.db") as store:
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
        with (
            TestClient(app, base_url="https://balancer.test") as network,
            TestClient(local(app), base_url="http://balancer") as local_client,
        ):
            yield WebApp(network, local_client, store, engine, clock, stopped)
