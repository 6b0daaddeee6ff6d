"""Simulated PSM servers for trying Balancer out, driven through the lab's own control socket."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from balancer.cli.answer import echo_json, fail

T = TypeVar("T")

app = typer.Typer(help="Simulated PSM servers for trying Balancer out")

LabDir = Annotated[
    Path,
    typer.Option(
        "--lab-dir",
        envvar="BALANCER_LAB_DIR",
        help="where the lab keeps its socket and certificates",
    ),
]
LAB_DIR = Path("/tmp/balancer-lab")


def _lab(request: Coroutine[Any, Any, T]) -> T:
    """Run one request to the lab's control socket; a failure is one line and exit 1."""
    from balancer.control import ControlError

    try:
        return asyncio.run(request)
    except ControlError as error:
        fail(str(error))


@app.command("start")
def lab_start(
    servers: Annotated[int, typer.Option(help="how many PSM servers")] = 2,
    lab_dir: LabDir = LAB_DIR,
) -> None:
    """Run simulated PSM servers (PSM1 on 127.94.0.105, PSM2 on .106, ...) until stopped."""
    from balancer.lab.process import default_specs, run

    privileged = os.geteuid() == 0
    specs = default_specs(servers, privileged)
    if not privileged:
        typer.echo("not root: the lab uses ports 13389 and 10443 instead of 3389 and 443", err=True)
    for spec in specs:
        typer.echo(f"{spec.name}: RDP {spec.ip}:{spec.rdp_port}, HTTPS {spec.ip}:{spec.https_port}")
    run(specs, lab_dir)


@app.command("set")
def lab_set(
    server: str,
    mode: Annotated[str, typer.Argument(help="pass, fail, hang or down")],
    lab_dir: LabDir = LAB_DIR,
) -> None:
    """Make a lab PSM server pass or fail its health check, hang, or go down."""
    from balancer.lab.process import set_mode

    _lab(set_mode(lab_dir, server, mode))
    typer.echo(f"{server} is now {mode}")


@app.command("status")
def lab_status_command(lab_dir: LabDir = LAB_DIR) -> None:
    """Each lab PSM server's mode and connections."""
    from balancer.lab.process import lab_status

    echo_json(_lab(lab_status(lab_dir)))


@app.command("stop")
def lab_stop(lab_dir: LabDir = LAB_DIR) -> None:
    """Stop the lab."""
    from balancer.lab.process import stop_lab

    _lab(stop_lab(lab_dir))
