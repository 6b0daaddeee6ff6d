"""What runs and what waits: System Overview, the changes a commit makes, the commit, the logs."""

from __future__ import annotations

from typing import Annotated

import typer

from balancer.cli.answer import JsonOption, echo_json, moment
from balancer.cli.appliance import DATA_DIR, DirOption, client


def status(ctx: typer.Context, data_dir: DirOption = DATA_DIR, as_json: JsonOption = False) -> None:
    """System Overview: every virtual service and real server, live."""
    from balancer.overview import render

    with client(ctx, data_dir) as appliance:
        overview = appliance.get("/status")
    echo_json(overview) if as_json else typer.echo(render(overview))


def changes(ctx: typer.Context, data_dir: DirOption = DATA_DIR) -> None:
    """Show saved changes that a commit will apply."""
    with client(ctx, data_dir) as appliance:
        pending = appliance.get("/changes")
    running = pending["applied"]
    if not pending["changes"]:
        typer.echo(
            f"nothing to commit: revision {running} is running"
            if running is not None
            else "nothing to commit, and nothing is running yet"
        )
        return
    typer.echo(
        f"revision {pending['head']} saved, "
        + (f"{running} running:" if running is not None else "nothing is running yet:")
    )
    for change in pending["changes"]:
        typer.echo(f"  {change}")


def commit(ctx: typer.Context, data_dir: DirOption = DATA_DIR) -> None:
    """Apply the saved configuration (the guide's "Reload HAProxy"); on an HA pair's Primary,
    say whether the Secondary applied it too."""
    with client(ctx, data_dir) as appliance:
        applied = appliance.post("/commit")
    typer.echo(f"revision {applied['revision']} is running")
    secondary = applied.get("secondary")
    if secondary is not None:
        at = secondary["at"]
        typer.echo(secondary["said"] + (f" at {moment(at)}" if at is not None else ""))


def logs(
    ctx: typer.Context,
    data_dir: DirOption = DATA_DIR,
    limit: int = 50,
    source: Annotated[str | None, typer.Option(help="engine or appliance")] = None,
    text: Annotated[str | None, typer.Option(help="only entries with this text, any case")] = None,
) -> None:
    """The engine's and the appliance's logs, newest last."""
    with client(ctx, data_dir) as appliance:
        entries = appliance.get("/logs", limit=limit, source=source, text=text)
    for entry in reversed(entries):
        when, source_name = moment(entry["time"]), entry.get("source", "-")
        typer.echo(f"{when} {source_name:9} {entry['level']:7} {entry['message']}")
