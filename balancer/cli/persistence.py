"""The persistence (stick) table of a virtual service."""

from __future__ import annotations

import typer

from balancer.cli.appliance import DATA_DIR, DirOption, client

app = typer.Typer(help="The persistence (stick) table of a virtual service")


@app.command("list")
def persistence_list(ctx: typer.Context, service: str, data_dir: DirOption = DATA_DIR) -> None:
    """Which client sticks to which real server, and for how much longer."""
    with client(ctx, data_dir) as appliance:
        for entry in appliance.get(f"/virtual-services/{service}/persistence"):
            typer.echo(f"{entry['client']:>40} -> {entry['server']:16} {entry['expires_in']}s")


@app.command("clear")
def persistence_clear(ctx: typer.Context, service: str, data_dir: DirOption = DATA_DIR) -> None:
    """Forget every persistent client of a virtual service."""
    with client(ctx, data_dir) as appliance:
        cleared = appliance.delete(f"/virtual-services/{service}/persistence")
    typer.echo(f"{cleared['cleared']} entries cleared")
    peer = cleared.get("peer")
    if peer is not None:
        typer.echo(
            f"the peer: {peer['cleared']} entries cleared"
            if "cleared" in peer
            else f"the peer's table was not cleared: {peer['error']}"
        )
