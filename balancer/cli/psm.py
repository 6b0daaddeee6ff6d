"""The CyberArk PSM preset: both virtual services of the guide in one step."""

from __future__ import annotations

from typing import Annotated

import typer

from balancer.cli.answer import fail, saved
from balancer.cli.appliance import DATA_DIR, DirOption, client

app = typer.Typer(help="The CyberArk PSM preset")


@app.command("create")
def psm_create(
    ctx: typer.Context,
    rdp_vip: Annotated[str, typer.Option(help="VIP 1 address (CyberArk-PSM, RDP)")],
    web_vip: Annotated[str, typer.Option(help="VIP 2 address (CyberArk-PSM-Web, HTML5)")],
    server: Annotated[list[str], typer.Option(help="a PSM server as LABEL=IP; repeat")],
    recommended: Annotated[
        bool, typer.Option(help="CyberArk's least connections + RDP check")
    ] = False,
    rdp_port: int = 3389,
    web_port: int = 443,
    commit_now: Annotated[bool, typer.Option("--commit", help="apply at once")] = False,
    data_dir: DirOption = DATA_DIR,
) -> None:
    """Create both virtual services of the CyberArk PSM guide for the given PSM servers."""
    servers = []
    for item in server:
        name, sep, address = item.partition("=")
        if not sep:
            fail(f"--server {item!r}: expected LABEL=IP, e.g. PSM1=192.168.94.105", 2)
        servers.append((name, address))
    body = {
        "rdp_vip": rdp_vip,
        "web_vip": web_vip,
        "servers": servers,
        "recommended": recommended,
        "rdp_port": rdp_port,
        "web_port": web_port,
    }
    with client(ctx, data_dir) as appliance:
        reply = appliance.post("/presets/psm", body)
        if commit_now:
            applied = appliance.post("/commit")
            typer.echo(f"CyberArk PSM services created; revision {applied['revision']} running")
        else:
            saved(reply)
