"""Management lockdown, the guide's Firewall Lockdown Wizard: the networks that may reach the
WebUI and the API (README, Management lockdown). On the appliance itself this command goes
through the Unix socket, which no list shuts out: it can always undo a lockdown."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from balancer.cli.answer import JsonOption, echo_json
from balancer.cli.appliance import DATA_DIR, DirOption, client

app = typer.Typer(help="Management lockdown: the networks that may reach the WebUI and the API")


def _said(settings: dict[str, Any], as_json: bool) -> None:
    if as_json:
        echo_json(settings)
        return
    networks = settings["management_allow"]
    if networks:
        typer.echo(f"management_allow: {', '.join(networks)}")
    else:
        typer.echo("management_allow: none listed: the WebUI and the API answer every network")


@app.command("show")
def lockdown_show(
    ctx: typer.Context, data_dir: DirOption = DATA_DIR, as_json: JsonOption = False
) -> None:
    """Show the networks that may reach the WebUI and the API."""
    with client(ctx, data_dir) as appliance:
        _said(appliance.get("/lockdown"), as_json)


@app.command("set")
def lockdown_set(
    ctx: typer.Context,
    networks: Annotated[
        list[str], typer.Argument(help="networks, e.g. 10.20.0.0/24 192.168.94.10/32")
    ],
    data_dir: DirOption = DATA_DIR,
    as_json: JsonOption = False,
) -> None:
    """Let only these networks reach the WebUI and the API, at once.

    Over --url, a list that would shut out the address you call from is refused."""
    with client(ctx, data_dir) as appliance:
        _said(appliance.put("/lockdown", {"management_allow": networks}), as_json)


@app.command("clear")
def lockdown_clear(
    ctx: typer.Context, data_dir: DirOption = DATA_DIR, as_json: JsonOption = False
) -> None:
    """Let every network reach the WebUI and the API again."""
    with client(ctx, data_dir) as appliance:
        _said(appliance.put("/lockdown", {"management_allow": []}), as_json)
