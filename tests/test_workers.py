"""Workers without an engine: the kernel's choice of a worker by source address, each
worker's share of a connection limit, and the node setting."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from ipaddress import ip_address
from pathlib import Path

import pytest

from balancer.engines.builtin.listeners import listen_group
from balancer.engines.builtin.workers import share
from balancer.model import NodeSettings
from balancer.store import Store
from balancer.validate import Invalid, parse, parse_as
from tests.backends import Addresses, free_port


@pytest.fixture
def group(request: pytest.FixtureRequest) -> Iterator[tuple[list[socket.socket], str, int]]:
    ip, count = request.param
    port = free_port(ip)
    sockets = listen_group(ip, port, count)
    for sock in sockets:
        sock.settimeout(0)
    try:
        yield sockets, ip, port
    finally:
        for sock in sockets:
            sock.close()


def accepted_by(group: list[socket.socket], source: str, vip: tuple[str, int]) -> int:
    """Which socket of ``group`` a connection from ``source`` is queued on."""
    with socket.socket(group[0].family) as client:
        client.bind((source, 0))
        client.connect(vip)  # the handshake completes into a listen queue
        for index, sock in enumerate(group):
            try:
                sock.accept()[0].close()
            except BlockingIOError:
                continue
            return index
    raise AssertionError(f"no socket of the group took the connection from {source}")


@pytest.mark.parametrize("group", [("127.0.0.1", 3)], indirect=True)
def test_a_source_address_always_reaches_the_same_socket(
    group: tuple[list[socket.socket], str, int],
) -> None:
    sockets, ip, port = group
    net = Addresses()
    sources = [net.ip() for _ in range(9)]
    for _ in range(3):
        for source in sources:
            assert accepted_by(sockets, source, (ip, port)) == int(ip_address(source)) % 3


@pytest.mark.parametrize("group", [("::1", 2)], indirect=True)
def test_ipv6_sources_are_chosen_by_their_last_word(
    group: tuple[list[socket.socket], str, int],
) -> None:
    sockets, ip, port = group
    assert accepted_by(sockets, "::1", (ip, port)) == 1


def test_a_connection_limit_is_shared_out_among_the_workers() -> None:
    config = parse(
        {
            "virtual_services": [
                {
                    "label": "rdp",
                    "ip": "127.0.0.1",
                    "ports": "3389",
                    "real_servers": [
                        {"label": "a", "ip": "127.0.0.2", "max_connections": 10},
                        {"label": "b", "ip": "127.0.0.3", "max_connections": 1},
                        {"label": "c", "ip": "127.0.0.4"},
                    ],
                }
            ]
        }
    )

    def limits(index: int) -> list[int]:
        servers = share(config.virtual_services[0], index, 3).real_servers
        return [rs.max_connections for rs in servers]

    assert [limits(i) for i in range(3)] == [[4, 1, 0], [3, 1, 0], [3, 1, 0]]
    assert config.virtual_services[0].real_servers[0].max_connections == 10


@pytest.mark.parametrize("workers", [0, 65, "many"])
def test_workers_out_of_range_are_refused_by_name(workers: object) -> None:
    with pytest.raises(Invalid) as refused:
        parse_as(NodeSettings, {"workers": workers})
    assert "workers" in str(refused.value)


def test_one_worker_is_the_default() -> None:
    assert NodeSettings().workers == 1


def test_serve_refuses_a_bad_worker_count_and_keeps_the_setting(tmp_path: Path) -> None:
    def serve(workers: str) -> subprocess.CompletedProcess[str]:
        command = ["serve", "--dir", str(tmp_path), "--workers", workers]
        return subprocess.run(
            [sys.executable, "-m", "balancer", *command], capture_output=True, text=True, timeout=60
        )

    with Store(tmp_path / "balancer.db") as store:
        store.save_node_settings(
            store.node_settings().model_copy(update={"workers": 2}), author="t"
        )
    refused = serve("0")
    assert refused.returncode != 0
    assert "workers: must be at least 1, not 0" in refused.stderr
    with Store(tmp_path / "balancer.db") as store:
        assert store.node_settings().workers == 2
