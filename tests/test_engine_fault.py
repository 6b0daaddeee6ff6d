"""The management plane survives the data plane: an engine that cannot start, or refuses the
applied revision, leaves `balancer serve`, its API and the `balancer` command working. The
engine's own words are in System Overview, and a fix (a freed port, a commit) brings the
service back. Real processes throughout: `balancer serve`, its engine, the lab's PSM server."""

from __future__ import annotations

import asyncio
import contextlib
import html
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from balancer.client import api_socket
from balancer.engines import ENGINES
from balancer.lab.clients import rdp_lands
from balancer.lab.server import LabServerSpec
from balancer.store import Store
from tests.appliance import HOSTS, WEBUI_HOST, Appliance, appliance, free_port, lab, wait_for

SERVICE = "Remote"
CLIENT = "127.0.68.1"
# Below what HAProxy needs for even an empty configuration (about 240), above what the
# management daemon needs.
OPEN_FILES = 128
# The supervisor waits 2, 4, 8... seconds between tries: long enough for a few of them.
RETRIED = 45.0

Address = tuple[str, int]


def ok(box: Appliance, *args: str) -> str:
    done = box.cli(*args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def answers(vip: Address, timeout: float = 20.0) -> None:
    wait_for(f"the service on {vip}", lambda: asyncio.run(rdp_lands(vip, CLIENT)), timeout)


@contextlib.contextmanager
def served(root: Path, engine: str, cwd: Path | None = None) -> Iterator[tuple[Appliance, Address]]:
    """One virtual service in front of the lab's PSM1, committed and answering."""
    rdp, web = free_port(HOSTS.values()), free_port(HOSTS.values())
    specs = [LabServerSpec("PSM1", HOSTS["PSM1"], rdp, web)]
    with lab(root, specs), appliance(root, engine, cwd) as box:
        vip = (HOSTS["rdp_vip"], free_port([HOSTS["rdp_vip"]]))
        ok(box, "vip", "add", SERVICE, "--ip", vip[0], "--ports", str(vip[1]), "--check", "connect")
        ok(box, "rip", "add", SERVICE, "PSM1", "--ip", HOSTS["PSM1"], "--port", str(rdp))
        box.client.patch(f"/virtual-services/{SERVICE}", {"health_check": {"interval": 0.2}})
        ok(box, "commit")
        answers(vip)
        yield box, vip
        assert "Traceback" not in (root / "serve.err").read_text()


@contextlib.contextmanager
def held(address: Address) -> Iterator[None]:
    """``address`` listened on by another process's socket (this test's)."""
    with socket.socket() as holder:
        holder.bind(address)
        holder.listen()
        yield


def shown_error(box: Appliance) -> str:
    """The engine's error in System Overview, checked the same in `balancer status`."""
    error = box.client.get("/status")["engine_error"]
    assert isinstance(error, str)
    assert "\n" not in error
    status = box.cli("status")
    assert status.returncode == 0, status.stderr
    assert f"! engine: {error}" in status.stdout.splitlines()
    # The WebUI's System Overview, as the Unix socket (a trusted local caller) serves it.
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(api_socket(box.data_dir)))) as web:
        page = web.get("http://balancer/lbadmin/overview/live")
    assert page.status_code == 200
    assert error in html.unescape(page.text)
    return error


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("fix", ["port freed", "port changed"])
def test_a_vip_port_another_process_holds_leaves_the_appliance_up_and_fixable(
    tmp_path: Path, engine: str, fix: str
) -> None:
    with served(tmp_path, engine) as (box, vip):
        box.stop()
        with held(vip):
            box.start()
            applied = box.client.get("/status")["applied"]
            error = shown_error(box)
            assert error.startswith(f"revision {applied} refused: virtual_services[{SERVICE}].")
            assert "Address already in use" in error
            if fix == "port changed":
                vip = (vip[0], free_port([vip[0]]))
                ok(box, "vip", "modify", SERVICE, "--ports", str(vip[1]))
                assert ok(box, "commit") == f"revision {applied + 1} is running\n"
                answers(vip)
        answers(vip, RETRIED)
        # The engine may answer a moment before its apply returns to the supervisor.
        wait_for("the error gone", lambda: box.client.get("/status")["engine_error"] is None)
        status = box.client.get("/status")
        assert status["engine"]["revision"] == status["applied"]


def test_haproxy_that_cannot_raise_its_open_files_limit_leaves_the_appliance_up(
    tmp_path: Path,
) -> None:
    with served(tmp_path, "haproxy") as (box, vip):
        box.stop()
        box.start(open_files=OPEN_FILES)
        error = shown_error(box)
        assert error.startswith("HAProxy did not start: ")
        # HAProxy's words, e.g. "FD limit (128) too low for maxconn=100/maxsock=243" or, when
        # the configuration asks for more, "Cannot raise FD limit to 243, limit is 128".
        assert "FD limit" in error
        assert str(OPEN_FILES) in error
        assert box.client.get("/status")["engine"] is None
        # The API and the command work: an edit is saved; a commit says in one line why not.
        ok(box, "rip", "modify", SERVICE, "PSM1", "--weight", "50")
        refused = box.cli("commit")
        assert refused.returncode == 1
        assert refused.stderr.startswith("error: engine: HAProxy did not start: ")
        assert len(refused.stderr.splitlines()) == 1
        box.stop()
        box.start()  # with the machine's own limit
        answers(vip)
        ok(box, "commit")
        assert box.server(SERVICE, "PSM1")["weight"] == 50


def test_a_built_in_engine_that_dies_at_start_leaves_the_appliance_up(tmp_path: Path) -> None:
    with served(tmp_path, "builtin") as (box, vip):
        box.stop()
        in_the_way = box.data_dir / "engine.sock"  # the engine's control socket cannot be made
        (in_the_way / "something").mkdir(parents=True)
        box.start()
        error = shown_error(box)
        assert error.startswith("the engine exited with status 1: IsADirectoryError: ")
        assert box.client.get("/status")["engine"] is None
        shutil.rmtree(in_the_way)
        answers(vip, RETRIED)
        wait_for("the error gone", lambda: box.client.get("/status")["engine_error"] is None)


def test_serve_says_in_one_line_why_it_cannot_start_and_keeps_nothing(tmp_path: Path) -> None:
    data_dir = tmp_path / "appliance"
    with socket.socket() as taken:
        taken.bind((WEBUI_HOST, 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        free = str(free_port([WEBUI_HOST]))
        for args, words in (
            (["--listen", WEBUI_HOST, "--https-port", port], "Address already in use"),
            (["--listen", WEBUI_HOST, "--https-port", free, "--http-port", port], "in use"),
            (["--https-port", "70000"], "https_port: must be at most 65535, not 70000"),
            (["--listen", "127.0.0.999"], "listen_address: '127.0.0.999' is not an IPv4"),
            (["--engine", "nginx"], "engine: 'nginx' is not one of builtin, haproxy"),
        ):
            serve = [sys.executable, "-m", "balancer", "serve", "--dir", str(data_dir), *args]
            done = subprocess.run(serve, capture_output=True, text=True, timeout=60, check=False)
            assert done.returncode != 0, args
            assert done.stderr.startswith("error: "), done.stderr
            assert words in done.stderr
            assert len(done.stderr.splitlines()) == 1, done.stderr
    with Store(data_dir / "balancer.db") as store:
        node = store.node_settings()
    assert str(node.https_port) != port
    assert node.http_port is None


@pytest.mark.parametrize("engine", ENGINES)
def test_a_relative_data_directory_serves(tmp_path: Path, engine: str) -> None:
    with served(tmp_path, engine, cwd=tmp_path) as (box, vip):
        if engine == "haproxy":
            config = (box.data_dir / "haproxy" / "haproxy.cfg").read_text()
            assert f"stats socket {box.data_dir.resolve()}/haproxy/haproxy.sock " in config
        answers(vip)
        assert box.client.get("/status")["engine"]["revision"] is not None
