"""``balancer demo``: the appliance with the CyberArk PSM preset in front of simulated PSM
servers, exactly as the guide configures it, with a short tour of what to look at."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from balancer import defaults, first_start, users
from balancer.client import ApiError, Client, api_socket
from balancer.lab.clients import rdp_lands, web_lands
from balancer.lab.process import default_specs, lab_status, stop_lab
from balancer.overview import render
from balancer.store import Store

RDP_VIP = "127.94.0.100"
WEB_VIP = "127.94.0.101"
WEBUI_HOST = "127.0.0.1"
START_TIMEOUT = 30.0


def _wait(what: str, ready: Callable[[], object], process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            ready()
            return
        except Exception:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not start; see its log") from None
            time.sleep(0.1)


@contextlib.contextmanager
def running(
    root: Path, servers: int, engine: str = "builtin"
) -> Iterator[tuple[Client, dict[str, Any]]]:
    """Start the lab and the appliance, configure the preset; stop everything on the way out."""
    privileged = os.geteuid() == 0
    lab_dir, data_dir = root / "lab", root / "appliance"
    (root / "logs").mkdir(parents=True, exist_ok=True)
    ports = "privileged" if privileged else "unprivileged"
    # The lab and the daemon get sessions of their own: a signal to the demo's process group
    # reaches only the demo, which then stops them in order, the engine included.
    with (root / "logs" / "lab.out").open("ab") as lab_log:
        lab = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "balancer.lab",
                "--servers",
                str(servers),
                "--dir",
                str(lab_dir),
                "--ports",
                ports,
            ],
            stdout=lab_log,
            stderr=lab_log,
            start_new_session=True,
        )
    daemon: subprocess.Popen[bytes] | None = None
    client = Client(api_socket(data_dir), user="demo")
    try:
        _wait("the lab", lambda: asyncio.run(lab_status(lab_dir)), lab)
        password = _new_password(data_dir)
        with (root / "logs" / "serve.out").open("ab") as serve_log:
            daemon = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "balancer",
                    "serve",
                    "--dir",
                    str(data_dir),
                    "--engine",
                    engine,
                    # The demo's WebUI is for this machine's browser only.
                    "--listen",
                    WEBUI_HOST,
                ],
                stdout=serve_log,
                stderr=serve_log,
                start_new_session=True,
            )
        _wait("the appliance", lambda: client.get("/status"), daemon)
        specs = default_specs(servers, privileged)
        if not client.get("/virtual-services"):
            client.post(
                "/presets/psm",
                {
                    "rdp_vip": RDP_VIP,
                    "web_vip": WEB_VIP,
                    "servers": [(spec.name, spec.ip) for spec in specs],
                    "rdp_port": specs[0].rdp_port,
                    "web_port": specs[0].https_port,
                },
            )
        client.post("/commit")
        yield (
            client,
            {
                "lab_dir": lab_dir,
                "data_dir": data_dir,
                "specs": specs,
                "password": password,
            },
        )
    finally:
        with contextlib.suppress(ApiError):
            client.post("/shutdown", engine="true")
        client.close()
        with contextlib.suppress(Exception):
            asyncio.run(stop_lab(lab_dir))
        for process in (daemon, lab):
            if process is not None:
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def _new_password(data_dir: Path) -> str:
    """A new password for the WebUI, shown in the tour: the demo's serve log must not get it."""
    password = users.generate_password()
    with Store(first_start.prepare(data_dir)) as store:
        first_start.set_user_password(store, password, author="demo")
    return password


def traffic(specs: list[Any], clients: int = 10) -> dict[str, dict[str, str]]:
    """Connect ``clients`` distinct clients to both VIPs twice; where did each land?"""

    async def tour() -> dict[str, dict[str, str]]:
        landed: dict[str, dict[str, str]] = {"CyberArk-PSM": {}, "CyberArk-PSM-Web": {}}
        for round_ in range(2):
            for n in range(1, clients + 1):
                source = f"127.0.94.{n}"
                rdp_server = await rdp_lands((RDP_VIP, specs[0].rdp_port), source)
                web_server = await web_lands((WEB_VIP, specs[0].https_port), source)
                for service, server in (
                    ("CyberArk-PSM", rdp_server),
                    ("CyberArk-PSM-Web", web_server),
                ):
                    previous = landed[service].setdefault(source, server)
                    if round_ and previous != server:
                        landed[service][source] = f"{previous} then {server}"
        return landed

    return asyncio.run(tour())


def tour(client: Client, context: dict[str, Any]) -> str:
    specs = context["specs"]
    rdp_port, web_port = specs[0].rdp_port, specs[0].https_port
    landed = traffic(specs)
    spread = {service: Counter(where.values()) for service, where in landed.items()}
    root = context["data_dir"].parent
    env = f"BALANCER_DIR={context['data_dir']} BALANCER_LAB_DIR={context['lab_dir']}"
    lines = [
        "",
        "Balancer is running the CyberArk PSM preset in front of "
        f"{len(specs)} simulated PSM servers.",
        f"  VIP 1 CyberArk-PSM      {RDP_VIP}:{rdp_port}  (RDP)",
        f"  VIP 2 CyberArk-PSM-Web  {WEB_VIP}:{web_port}  (HTML5 gateway)",
        *[f"  {s.name}: RDP {s.ip}:{s.rdp_port}, HTTPS {s.ip}:{s.https_port}" for s in specs],
        "",
        "10 clients from 127.0.94.1-10, each connecting twice (source-IP persistence):",
        *[f"  {service}: {dict(count)}" for service, count in spread.items()],
        "",
        render(client.get("/status")),
        "",
        f"Where to look (in another shell; logs in {root / 'logs'}):",
        f"  export {env}",
        "  .venv/bin/balancer status                 # System Overview",
        "  .venv/bin/balancer lab set PSM2 fail      # PSM2's health turns FAIL: watch it go red",
        "  .venv/bin/balancer rip drain CyberArk-PSM PSM1",
        "  .venv/bin/balancer logs                   # health changes with their reasons",
        f"  curl -k --interface 127.0.94.7 https://{WEB_VIP}:{web_port}/",
        "  .venv/bin/balancer config export         # the backup document",
        "",
        f"The WebUI: https://{WEBUI_HOST}:{defaults.HTTPS_PORT}/lbadmin/ (a self-signed "
        "certificate: the browser warns once)",
        f"  user {defaults.USER}, password {context['password']}",
    ]
    return "\n".join(lines)


def _stop(signum: int, _: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def run(root: Path, servers: int, check: bool, engine: str = "builtin") -> int:
    # Killed or hung up on, the demo still stops what it started, the engine included.
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _stop)
    with running(root, servers, engine) as (client, context):
        print(tour(client, context), flush=True)
        if check:
            return 0
        print("\nPress Ctrl-C to stop the demo.", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
    return 0
