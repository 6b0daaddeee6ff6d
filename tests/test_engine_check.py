"""keepalived's check of the local engine (``balancer.ha.engine_check``): it asks the engine
itself, so a management daemon that stops or restarts moves no floating IP."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from balancer.engines.builtin.process import paths
from balancer.engines.haproxy import runtime
from balancer.engines.haproxy.paths import Paths
from balancer.ha import engine_check
from balancer.ha.keepalived import EngineCheck
from tests.appliance import Appliance, appliance, free_port, wait_for
from tests.engine.conftest import HAPROXY_MISSING

RUN = """
import json, sys
from balancer.ha.engine_check import main
try:
    main()
except SystemExit as exit:
    print(json.dumps({"code": exit.code, "modules": sorted(sys.modules)}))
"""


def check(data_dir: Path) -> tuple[int, str]:
    """The exit code and standard error of keepalived's very command for ``data_dir``."""
    command = EngineCheck.for_node(data_dir).command
    done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    return done.returncode, done.stderr


def commit_one_service(box: Appliance) -> None:
    """A revision for the engine to run: a fresh appliance's engine runs none."""
    vip = "127.96.2.10"
    box.client.post(
        "/virtual-services",
        {"label": "Web", "ip": vip, "ports": str(free_port([vip])),
         "real_servers": [{"label": "web1", "ip": "127.96.2.11"}]},
    )  # fmt: skip
    assert box.cli("commit").returncode == 0


def stop_daemon_only(box: Appliance) -> None:
    box.client.post("/shutdown", engine="false")
    box.process.wait(15)


def test_the_paths_are_the_engines_own(tmp_path: Path) -> None:
    assert tmp_path / engine_check.BUILTIN_SOCKET == paths(tmp_path)[0]
    assert tmp_path / engine_check.HAPROXY_SOCKET == Paths(tmp_path).master_socket
    assert f"{runtime.show_revision()}\n".encode() == engine_check.HAPROXY_REVISION


def test_the_check_imports_nothing_of_balancer_but_itself(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", RUN, "--dir", str(tmp_path)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    found = json.loads(done.stdout)
    assert found["code"] == 1
    ours = {m for m in found["modules"] if m.startswith("balancer")}
    assert ours == {"balancer", "balancer.ha", "balancer.ha.engine_check"}
    assert "error: engine: not running (no engine.sock" in done.stderr


def test_the_builtin_engine_answers_with_or_without_the_daemon_and_not_once_stopped(
    tmp_path: Path,
) -> None:
    with appliance(tmp_path) as box:
        commit_one_service(box)
        assert check(box.data_dir) == (0, "")
        assert box.cli("engine-check").returncode == 0
        stop_daemon_only(box)
        # The data plane outlives the daemon: the floating IPs stay.
        assert check(box.data_dir) == (0, "")
        pid = int((box.data_dir / "engine.pid").read_text())
        os.kill(pid, signal.SIGTERM)
        wait_for("the engine to stop", lambda: not (box.data_dir / "engine.sock").exists())
        code, said = check(box.data_dir)
        assert code == 1
        assert said.startswith("error: engine: not running (no engine.sock")
        assert said.count("\n") == 1
        by_hand = box.cli("engine-check")
        assert (by_hand.returncode, by_hand.stderr) == (code, said)


def test_an_engine_killed_outright_is_not_running(tmp_path: Path) -> None:
    with appliance(tmp_path) as box:
        stop_daemon_only(box)
        pid = int((box.data_dir / "engine.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        wait_for("the engine to end", lambda: not Path(f"/proc/{pid}").exists())
        assert (box.data_dir / "engine.sock").exists()  # left behind
        code, said = check(box.data_dir)
    assert code == 1
    assert said.startswith("error: engine: not running (nothing listens on ")


def test_an_engine_that_runs_no_revision_fails(tmp_path: Path) -> None:
    engine = subprocess.Popen(
        [sys.executable, "-m", "balancer.engines.builtin", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for("the engine to answer", lambda: "runs no revision" in check(tmp_path)[1])
        assert check(tmp_path) == (1, "error: engine: the built-in engine runs no revision\n")
    finally:
        engine.terminate()
        engine.wait(15)


def test_an_engine_that_never_answers_fails_within_the_time_limit(tmp_path: Path) -> None:
    path = tmp_path / "engine.sock"
    accepted: list[socket.socket] = []
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        server.listen()
        thread = threading.Thread(target=lambda: accepted.append(server.accept()[0]))
        thread.start()
        code, said = check(tmp_path)
        thread.join(5)
    for connection in accepted:
        connection.close()
    assert code == 1
    assert said == f"error: engine: {path} not answering in 500 ms\n"


@pytest.mark.skipif(HAPROXY_MISSING, reason="HAProxy is not installed")
def test_haproxy_answers_with_or_without_the_daemon_and_not_once_stopped(
    tmp_path: Path,
) -> None:
    with appliance(tmp_path, engine="haproxy") as box:
        assert check(box.data_dir) == (1, "error: engine: HAProxy runs no revision\n")
        commit_one_service(box)
        assert check(box.data_dir) == (0, "")
        stop_daemon_only(box)
        assert check(box.data_dir) == (0, "")
        box.start()
        box.stop()  # and its engine
        code, said = check(box.data_dir)
    assert code == 1
    assert said.startswith("error: engine: not running (no engine.sock or haproxy/master.sock")
