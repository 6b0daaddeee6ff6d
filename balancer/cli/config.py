"""View Configuration, and Backup & Restore (the guide's Maintenance)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from balancer.cli.answer import echo_json, fail, saved
from balancer.cli.appliance import DATA_DIR, DirOption, client

app = typer.Typer(help="View Configuration, and Backup & Restore")


@app.command("show")
def config_show(
    ctx: typer.Context,
    engine: Annotated[bool, typer.Option("--engine", help="as the engine runs it")] = False,
    data_dir: DirOption = DATA_DIR,
) -> None:
    """The configuration as saved, or as the engine runs it (haproxy.cfg for HAProxy)."""
    with client(ctx, data_dir) as appliance:
        if engine:
            typer.echo(appliance.get("/config/engine"), nl=False)
        else:
            echo_json(appliance.get("/config"))


@app.command("export")
def config_export(
    ctx: typer.Context,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="file; default stdout")
    ] = None,
    data_dir: DirOption = DATA_DIR,
) -> None:
    """Back up the whole configuration as a versioned document."""
    with client(ctx, data_dir) as appliance:
        document = appliance.get("/backup")
    text = json.dumps(document, indent=2) + "\n"
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text)
        typer.echo(f"revision {document['revision']} written to {output}")


@app.command("import")
def config_import(ctx: typer.Context, file: Path, data_dir: DirOption = DATA_DIR) -> None:
    """Restore a backup document: checked first, then saved as a new revision."""
    try:
        document = json.loads(file.read_text())
    except (OSError, ValueError) as error:
        fail(f"{file}: {error}")
    with client(ctx, data_dir) as appliance:
        saved(appliance.post("/restore", document))
