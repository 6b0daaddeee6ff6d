"""The audit trail: whether its hash chain is whole (README, Audit trail)."""

from __future__ import annotations

import typer

from balancer.cli.answer import JsonOption, echo_json
from balancer.cli.appliance import DATA_DIR, DirOption, client

app = typer.Typer(help="The audit trail: whether anyone edited or removed an entry")


@app.command("verify")
def audit_verify(
    ctx: typer.Context, data_dir: DirOption = DATA_DIR, as_json: JsonOption = False
) -> None:
    """Check every entry's hash against the one before it; exit 1 if the chain is broken.

    Prints the newest entry's hash too: note it elsewhere, and a trail rewritten since shows."""
    with client(ctx, data_dir) as appliance:
        verdict = appliance.get("/audit/verify")
    if as_json:
        echo_json(verdict)
    else:
        typer.echo(verdict["said"])
        typer.echo(f"newest entry's hash: {verdict['head']}")
    if not verdict["whole"]:
        raise typer.Exit(1)
