"""``balancer service-unit``: the systemd unit that runs this installation as a service."""

from __future__ import annotations

import resource
import sys
from pathlib import Path

import typer

from balancer.cli.appliance import DATA_DIR, DirOption, local_only

# KillMode=process: the engine (HAProxy's master or the built-in engine's processes) and
# keepalived are started by the management service, so they are in its control group; with
# systemd's default they would die with every restart of it, which must drop no connection
# and move no floating IP (README, "Running as a service"). Type=exec: a binary that cannot be
# started fails the start, not later. The open-files limit is the engine's ceiling on
# connections (it sizes maxconn to the limit it gets): the most this machine lets it have.
UNIT = """\
[Unit]
Description=Balancer load balancer: the management service (the engine outlives its restarts)
After=network-online.target
Wants=network-online.target

[Service]
Type=exec
ExecStart={balancer} serve --dir {data_dir}
KillMode=process
Restart=on-failure
RestartSec=2
LimitNOFILE={open_files}

[Install]
WantedBy=multi-user.target
"""


def service_unit(ctx: typer.Context, data_dir: DirOption = DATA_DIR) -> None:
    """Print the systemd unit for this installation (save it as
    /etc/systemd/system/balancer.service). Run `balancer setup` on the console first."""
    local_only(ctx, "service-unit")
    balancer = Path(sys.executable).parent / "balancer"
    _, open_files = resource.getrlimit(resource.RLIMIT_NOFILE)
    unit = UNIT.format(balancer=balancer, data_dir=data_dir.resolve(), open_files=open_files)
    typer.echo(unit, nl=False)
