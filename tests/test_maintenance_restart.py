"""Restart Services against the whole appliance: restarting the engine drops its connections
and brings the running revision back on a new process; restarting the management service moves
the WebUI to the saved service socket addresses while the engine runs on."""

from __future__ import annotations

import contextlib
import re
import socket
import socketserver
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.appliance import PASSWORD, WEBUI_HOST, Appliance, appliance, free_port, wait_for

RESTART = "/lbadmin/maintenance/restart"


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Appliance]:
    with appliance(tmp_path) as running:
        yield running


@contextmanager
def signed_in(port: int) -> Iterator[tuple[httpx.Client, str]]:
    """A browser signed in to the WebUI on ``port``, and its forms' CSRF token."""
    base = f"https://{WEBUI_HOST}:{port}"
    with httpx.Client(base_url=base, verify=False, timeout=30, follow_redirects=True) as client:
        token = _csrf(client.get("/lbadmin/sign-in").text)
        data = {"username": "loadbalancer", "password": PASSWORD, "csrf_token": token}
        assert client.post("/lbadmin/sign-in", data=data).status_code == 200
        yield client, _csrf(client.get("/lbadmin/local-configuration").text)


def _csrf(page: str) -> str:
    found = re.search(r'name="csrf_token" value="(\w+)"', page)
    assert found is not None
    return found.group(1)


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex((WEBUI_HOST, port)) == 0


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(4096):
            self.request.sendall(data)


@contextmanager
def _echo_server() -> Iterator[int]:
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo) as server:
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield server.server_address[1]
        finally:
            server.shutdown()
            thread.join(10)


def test_restarting_the_engine_is_confirmed_and_drops_its_connections(box: Appliance) -> None:
    vip = free_port(["127.0.0.1"])
    with _echo_server() as echo:
        server = {"label": "echo", "ip": "127.0.0.1", "port": echo}
        vs = {"label": "Echo", "ip": "127.0.0.1", "ports": str(vip), "real_servers": [server]}
        box.client.post("/virtual-services", vs)
        box.client.post("/commit")
        wait_for("the VIP", lambda: _listening(vip))
        engine = box.engine_pid()
        with (
            signed_in(box.https_port) as (client, csrf),
            socket.create_connection(("127.0.0.1", vip), timeout=10) as held,
        ):
            held.sendall(b"ping")
            assert held.recv(4) == b"ping"  # through the engine to the real server and back
            asked = client.post(RESTART, data={"csrf_token": csrf, "action": "engine"})
            assert "Restart the engine?" in asked.text
            assert box.engine_pid() == engine  # not before it is confirmed
            confirmed = {"csrf_token": csrf, "action": "engine", "confirm": "yes"}
            assert "Restart the engine: done." in client.post(RESTART, data=confirmed).text
            with contextlib.suppress(ConnectionResetError):  # dropped, as the page said
                assert held.recv(4) == b""
        assert box.engine_pid() != engine
        wait_for("the VIP again", lambda: _listening(vip))
    entry = box.client.get("/audit", limit=1)[0]
    assert (entry["author"], entry["action"]) == ("loadbalancer", "restart_engine")


def test_restarting_the_management_service_moves_it_to_the_saved_port(box: Appliance) -> None:
    engine = box.engine_pid()
    new_port = free_port([WEBUI_HOST])
    with signed_in(box.https_port) as (client, csrf):
        saved = {"listen_address": WEBUI_HOST, "https_port": str(new_port), "http_port": ""}
        page = client.post(
            "/lbadmin/local-configuration/sockets", data={"csrf_token": csrf, **saved}
        ).text
        assert "The saved addresses take effect after" in page
        assert f"HTTPS port {box.https_port}" in page  # still where it listens
        restart = {"csrf_token": csrf, "action": "management", "confirm": "yes"}
        page = client.post("/lbadmin/maintenance/restart", data=restart).text
        assert "The management service is restarting" in page

    def moved() -> bool:
        with httpx.Client(verify=False, timeout=5) as probe:
            reply = probe.get(f"https://{WEBUI_HOST}:{new_port}/lbadmin/sign-in")
        return reply.status_code == 200

    wait_for("the WebUI on its new port", moved)
    assert not _listening(box.https_port)
    assert box.engine_pid() == engine  # the data plane ran on throughout
    entries = {(e["author"], e["action"]) for e in box.client.get("/audit", limit=5)}
    assert {("loadbalancer", "restart_management"), ("loadbalancer", "node_settings")} <= entries
    box.https_port = new_port
