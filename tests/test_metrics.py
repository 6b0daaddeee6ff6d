"""GET /metrics: Prometheus's scrape, read back with prometheus_client's own parser, and who may
make it (an API key, or a network in the node setting metrics_allow)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from balancer import metrics
from balancer.controller import Commits
from balancer.ha.split_brain import Alarm
from balancer.model import NodeSettings
from balancer.pair.status import NodeView, PairView
from balancer.state import Counters, EngineStatus, ReplicationStatus, TableReplication
from balancer.store import Store
from balancer.system import SystemFigures
from tests.appliance import WEBUI_HOST, appliance
from tests.webapp import WebApp, webapp

PSM = {
    "label": "CyberArk-PSM",
    "ip": "192.168.94.100",
    "ports": "3389",
    "real_servers": [
        {"label": "PSM1", "ip": "192.168.94.105"},
        {"label": "PSM2", "ip": "192.168.94.106", "weight": 50},
        {"label": "PSM3", "ip": "192.168.94.107", "state": "halt"},
    ],
}


@pytest.fixture
def app(tmp_path: Path) -> Iterator[WebApp]:
    with webapp(tmp_path) as running:
        yield running


def committed(app: WebApp) -> None:
    assert app.local.post("/api/v1/virtual-services", json=PSM).is_success
    assert app.local.post("/api/v1/commit").is_success


def with_counters(app: WebApp) -> None:
    """The fake engine's status, with counters as a real engine's would have them."""
    plain = app.engine.status

    async def counted() -> EngineStatus:
        status = await plain()
        vs = status.virtual_services[0]
        servers = [
            rs.model_copy(update={"counters": Counters(active=i, total=10 * i, bytes_in=100 * i,
                                                        bytes_out=1000 * i),
                                  "check_seconds": 0.002 * i if i < 3 else None})
            for i, rs in enumerate(vs.real_servers, start=1)
        ]  # fmt: skip
        counters = Counters(active=6, total=60, bytes_in=600, bytes_out=6000)
        service = vs.model_copy(update={"counters": counters, "real_servers": tuple(servers)})
        return status.model_copy(update={"virtual_services": (service,)})

    app.engine.status = counted  # type: ignore[method-assign]


Sample = tuple[str, tuple[tuple[str, str], ...]]  # a sample's name and its sorted labels


def scraped(client: TestClient, **headers: str) -> dict[Sample, float]:
    reply = client.get("/metrics", headers=headers)
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("application/openmetrics-text")
    found = {}
    for family in text_string_to_metric_families(reply.text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def key(app: WebApp) -> dict[str, str]:
    made = app.local.post("/api/v1/api-keys", json={"name": "prometheus", "owner": "loadbalancer"})
    assert made.status_code == 201, made.text
    return {"Authorization": f"Bearer {made.json()['key']}"}


def server(name: str, psm: str, **more: str) -> Sample:
    labels = {"proxy": "CyberArk-PSM", "server": psm, **more}
    return name, tuple(sorted(labels.items()))


def proxy(name: str) -> Sample:
    return name, (("proxy", "CyberArk-PSM"),)


def test_the_scrape_has_haproxys_names_for_the_engines_counters(app: WebApp) -> None:
    committed(app)
    with_counters(app)
    app.engine.failed["CyberArk-PSM/PSM2"] = "connect: refused"
    found = scraped(app.network, **key(app))
    assert found[proxy("haproxy_backend_current_sessions")] == 6
    assert found[proxy("haproxy_backend_sessions_total")] == 60
    assert found[proxy("haproxy_backend_bytes_in_total")] == 600
    assert found[proxy("haproxy_backend_bytes_out_total")] == 6000
    assert found[proxy("haproxy_backend_active_servers")] == 1  # PSM2 down, PSM3 halted
    for i, psm in enumerate(("PSM1", "PSM2", "PSM3"), start=1):
        assert found[server("haproxy_server_current_sessions", psm)] == i
        assert found[server("haproxy_server_sessions_total", psm)] == 10 * i
        assert found[server("haproxy_server_bytes_in_total", psm)] == 100 * i
        assert found[server("haproxy_server_bytes_out_total", psm)] == 1000 * i
    assert found[server("haproxy_server_weight", "PSM2")] == 50
    states = {"PSM1": "UP", "PSM2": "DOWN", "PSM3": "MAINT"}
    for psm, state in states.items():
        for each in ("UP", "DOWN", "MAINT", "DRAIN"):
            assert found[server("haproxy_server_status", psm, state=each)] == (each == state)
    assert found[server("balancer_server_check_up", "PSM1")] == 1
    assert found[server("balancer_server_check_up", "PSM2")] == 0
    assert found[server("haproxy_server_check_duration_seconds", "PSM2")] == 0.004
    assert server("haproxy_server_check_duration_seconds", "PSM3") not in found  # none yet
    assert found[("balancer_engine_up", ())] == 1
    assert found[("balancer_engine_revision", ())] == 1
    assert found[("balancer_ha_paired", ())] == 0  # standalone: no HA state
    assert not [name for name, _ in found if name.startswith("balancer_ha_state")]
    assert found[("balancer_commit_duration_seconds_count", ())] == 1
    assert found[("balancer_commit_failures_total", ())] == 0
    assert found[("balancer_node_load_average", (("period", "1m"),))] >= 0
    assert found[("balancer_node_memory_bytes", (("kind", "total"),))] > 0


def test_an_engine_that_cannot_be_read_is_down_not_an_error(app: WebApp) -> None:
    committed(app)
    app.engine.unreachable = "the engine's socket: connection refused"
    found = scraped(app.network, **key(app))
    assert found[("balancer_engine_up", ())] == 0
    assert not [name for name, _ in found if name.startswith("haproxy_")]


def test_without_a_key_the_scrape_is_refused(app: WebApp) -> None:
    reply = app.network.get("/metrics")
    assert reply.status_code == 401
    assert reply.json()["detail"][0]["field"] == "authorization"
    wrong = app.network.get("/metrics", headers={"Authorization": "Bearer not-a-key"})
    assert wrong.status_code == 401


def test_a_network_in_metrics_allow_scrapes_without_a_key(app: WebApp) -> None:
    node = app.store.node_settings().model_dump()
    networks = ["10.20.0.0/16", "2001:db8::/32"]
    allowed = NodeSettings.model_validate({**node, "metrics_allow": networks})
    app.store.save_node_settings(allowed, author="test")
    inside = ("10.20.3.4", "::ffff:10.20.3.4", "2001:db8::7")
    for address in inside:
        with TestClient(app.network.app, base_url="https://balancer.test",
                        client=(address, 40000)) as prometheus:  # fmt: skip
            assert ("balancer_engine_up", ()) in scraped(prometheus), address
    for address in ("10.21.0.1", "2001:db9::1"):
        with TestClient(app.network.app, base_url="https://balancer.test",
                        client=(address, 40000)) as outsider:  # fmt: skip
            reply = outsider.get("/metrics")
            assert reply.status_code == 401, address
            assert reply.json()["detail"][0]["field"] == "authorization"
    # The allow-list opens /metrics, nothing else.
    with TestClient(app.network.app, base_url="https://balancer.test",
                    client=("10.20.3.4", 40000)) as prometheus:  # fmt: skip
        assert prometheus.get("/api/v1/status").status_code == 401


def parsed(text: bytes) -> dict[Sample, float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text.decode())
        for sample in family.samples
    }


def test_a_paired_nodes_role_sync_and_persistence_replication() -> None:
    replication = ReplicationStatus(
        peer="198.18.0.1:7778",
        up=True,
        since=1.0,
        synced=False,
        tables=(TableReplication(service="CyberArk-PSM", entries=40, pending=3, lag=0.2),),
    )
    this = NodeView("198.18.0.2", "secondary", "passive", 7, "builtin", None, "behind by 2",
                    replication=replication)  # fmt: skip
    pair = PairView(this=this, peer=None, link=0.4, split_brain=Alarm(raised=True, since=5.0))
    scrape = metrics.Scrape(None, "not started", SystemFigures(at=0.0), pair, Commits(4, 1, 2.5))
    found = parsed(metrics.exposition(scrape))
    assert found[("balancer_ha_paired", ())] == 1
    for state in ("active", "passive", "fault", "unknown"):
        labels = (("role", "secondary"), ("state", state))
        assert found[("balancer_ha_state", labels)] == (state == "passive")
    assert found[("balancer_ha_config_in_sync", ())] == 0  # behind by 2
    assert found[("balancer_ha_peer_last_answer_seconds", ())] == 0.4
    assert found[("balancer_ha_split_brain", ())] == 1
    assert found[("balancer_persistence_replication_up", ())] == 1
    assert found[("balancer_persistence_replication_synced", ())] == 0
    table = (("proxy", "CyberArk-PSM"),)
    assert found[("balancer_persistence_replication_pending", table)] == 3
    assert found[("balancer_persistence_entries", table)] == 40
    assert found[("balancer_commit_duration_seconds_count", ())] == 4
    assert found[("balancer_commit_duration_seconds_sum", ())] == 2.5
    assert found[("balancer_commit_failures_total", ())] == 1
    assert found[("balancer_engine_up", ())] == 0


def test_a_running_appliance_is_scraped_over_https(tmp_path: Path) -> None:
    """The daemon's own listener: the scraper's address is the socket's peer, not a header."""
    with appliance(tmp_path) as box:
        box.client.post("/virtual-services", {**PSM, "ip": "127.96.2.10", "ports": "33891"})
        box.client.post("/commit")
        url = f"https://{WEBUI_HOST}:{box.https_port}/metrics"
        with httpx.Client(verify=False, timeout=30) as prometheus:
            assert prometheus.get(url).status_code == 401
            with Store(box.data_dir / "balancer.db") as store:
                node = store.node_settings().model_dump()
                allowed = {**node, "metrics_allow": ["127.0.0.0/8"]}
                store.save_node_settings(NodeSettings.model_validate(allowed), author="test")
            reply = prometheus.get(url)
    assert reply.status_code == 200, reply.text
    found = parsed(reply.content)
    assert found[("balancer_engine_up", ())] == 1
    assert found[server("haproxy_server_weight", "PSM2")] == 50
    assert found[server("haproxy_server_status", "PSM3", state="MAINT")] == 1
    assert found[("balancer_commit_duration_seconds_count", ())] == 1


def test_local_configuration_sets_the_networks_that_scrape_without_a_key(app: WebApp) -> None:
    csrf = app.sign_in()
    form = "/lbadmin/local-configuration/metrics"
    before = app.store.node_settings()
    reply = app.network.post(form, data={"csrf_token": csrf, "metrics_allow": "10.20.0.1/16"})
    assert reply.status_code == 422
    assert "<code>metrics_allow[0]</code>: " in reply.text
    assert "10.20.0.1/16</textarea>" in reply.text  # what was typed, to correct
    assert app.store.node_settings() == before

    sent = "10.20.0.0/16\n 2001:db8::/32 "
    reply = app.network.post(form, data={"csrf_token": csrf, "metrics_allow": sent})
    assert "The networks that may scrape /metrics were saved" in reply.text
    assert "10.20.0.0/16\n2001:db8::/32</textarea>" in reply.text
    saved = app.store.node_settings().metrics_allow
    assert [str(network) for network in saved] == ["10.20.0.0/16", "2001:db8::/32"]
    with TestClient(app.network.app, base_url="https://balancer.test",
                    client=("10.20.9.9", 40000)) as prometheus:  # fmt: skip
        assert prometheus.get("/metrics").status_code == 200

    reply = app.network.post(form, data={"csrf_token": csrf, "metrics_allow": ""})
    assert app.store.node_settings().metrics_allow == ()
