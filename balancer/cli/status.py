"""What runs and what waits: System Overview, the changes a commit makes, the commit, the logs."""

from __future__ import annotations

from typing import Annotated

import typer

from balancer.cli.appliance import DATA_DIR, DirOption, JsonOption, client, echo_json


def status(data_dir: DirOption = DATA_DIR, as_json: JsonOption = False) -> None:
    """System Overview: every virtual service and real server, live."""
    from balancer.overview import render

    with client(data_dir) as appliance:
        overview = appliance.get("/status")
    echo_json(overview) if as_json else typer.echo(render(overview))


def changes(data_dir: DirOption = DATA_DIR) -> None:
    """Show saved changes that a commit will apply."""
    with client(data_dir) as appliance:
        pending = appliance.get("/changes")
    if not pending["changes"]:
        typer.echo(f"nothing to commit: revision {pending['head']} is running")
        return
    typer.echo(f"revision {pending['head']} saved, {pending['applied']} running:")
    for change in pending["changes"]:
        typer.echo(f"  {change}")


def commit(data_dir: DirOption = DATA_DIR) -> None:
    """Apply the saved configuration (the guide's "Reload HAProxy")."""
    with client(data_dir) as appliance:
        applied = appliance.post("/commit")
    typer.echo(f"revision {applied['revision']} is running")


def logs(
    data_dir: DirOption = DATA_DIR,
    limit: int = 50,
    source: Annotated[str | None, typer.Option(help="engine or appliance")] = None,
) -> None:
    """The engine's and the appliance's logs, newest last."""
    import time

    with client(data_dir) as appliance:
        entries = appliance.get("/logs", limit=limit, source=source)
    for entry in reversed(entries):
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry["time"]))
        typer.echo(f"{when} {entry.get('source', '-'):9} {entry['level']:7} {entry['message']}")
