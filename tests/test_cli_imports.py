"""What the everyday commands import: only what they use. Each starts a Python of its own, so
what a command imports is time an operator's script waits on every call; `make bench` measures
that time, this says what must not be in it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.appliance import Appliance, appliance, free_port

# The server side, the WebUI, the engines and the libraries only they need.
NOT_FOR_A_CLIENT = (
    "fastapi", "starlette", "uvicorn", "jinja2", "httpx", "cryptography", "uvloop",
    "balancer.api", "balancer.web", "balancer.engines", "balancer.store", "balancer.daemon",
    "balancer.controller", "balancer.health", "balancer.metrics", "prometheus_client",
)  # fmt: skip

VIP = "127.96.1.10"
RUN = """
import json, sys
from balancer.cli import main
sys.argv = ["balancer", *sys.argv[1:]]
try:
    main()
except SystemExit as exit:
    code = exit.code
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def imported(box: Appliance, *args: str) -> tuple[int, list[str]]:
    """The command's exit code and every module it imported, from a Python of its own."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BALANCER_")}
    done = subprocess.run(
        [sys.executable, "-c", RUN, *args],
        env={**clean, "BALANCER_DIR": str(box.data_dir)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    found = json.loads(done.stdout.splitlines()[-1])
    return found["code"], found["modules"]


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (("status",), 0),
        (("commit",), 0),
        (("rip", "drain", "Web", "web1"), 0),
        (("engine-check",), 1),  # the engine runs no revision: nothing is committed
        (("ha", "status"), 0),
        (("alerts", "list"), 0),
    ],
)
def test_the_everyday_commands_import_no_server_no_engine_and_no_http_library(
    tmp_path: Path, args: tuple[str, ...], code: int
) -> None:
    with appliance(tmp_path) as box:
        port = str(free_port([VIP]))
        box.client.post(
            "/virtual-services",
            {"label": "Web", "ip": VIP, "ports": port,
             "real_servers": [{"label": "web1", "ip": "127.96.1.11"}]},
        )  # fmt: skip
        exit_code, modules = imported(box, *args)
    assert exit_code == code
    assert "balancer.client" in modules  # it did reach the appliance
    loaded = [m for m in modules if m.startswith(NOT_FOR_A_CLIENT)]
    assert loaded == []
    others = {"vip", "config", "psm", "persistence", "users", "keys", "lab", "serve"}
    assert not {f"balancer.cli.{name}" for name in others} & set(modules)
