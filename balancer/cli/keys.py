"""API keys: each acts as its owner, for scripts and for `balancer --url` from elsewhere."""

from __future__ import annotations

from typing import Annotated

import typer

from balancer.cli.answer import JsonOption, echo_json, moment
from balancer.cli.appliance import DATA_DIR, DirOption, client
from balancer.roles import Role

app = typer.Typer(help="API keys, which act as their owner: for scripts and remote use")


@app.command("create")
def key_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="what the key is for, e.g. monitoring")],
    owner: Annotated[
        str | None, typer.Option(help="the user the key acts as; default: you")
    ] = None,
    role: Annotated[
        Role | None,
        typer.Option(help="a narrower role than the owner's, never wider; default: theirs"),
    ] = None,
    data_dir: DirOption = DATA_DIR,
) -> None:
    """Make a key and print it, this once: only its digest is kept.

    The key alone goes to standard output, so `balancer key create ci > ci.key` keeps it."""
    with client(ctx, data_dir) as appliance:
        made = appliance.post("/api-keys", {"name": name, "owner": owner, "role": role})
    typer.echo(made["key"])
    acts = f" with the role {made['role']}" if made["role"] else ""
    typer.echo(
        f"API key {made['id']} ({made['name']}) acts as {made['owner']}{acts}; "
        "it is shown only this once",
        err=True,
    )


@app.command("list")
def key_list(
    ctx: typer.Context, data_dir: DirOption = DATA_DIR, as_json: JsonOption = False
) -> None:
    """List the keys, revoked ones too; never the keys themselves."""
    with client(ctx, data_dir) as appliance:
        found = appliance.get("/api-keys")
    if as_json:
        echo_json(found)
        return
    for key in found:
        revoked = f"revoked {moment(key['revoked'])}" if key["revoked"] else "in use"
        role = key["role"] or "owner's"
        typer.echo(
            f"{key['id']:>4} {key['name']:24} owner={key['owner']:16} role={role:13} "
            f"made {moment(key['created'])}  {revoked}"
        )


@app.command("revoke")
def key_revoke(
    ctx: typer.Context,
    id: Annotated[int, typer.Argument(help="the key's number, as `balancer key list` shows")],
    data_dir: DirOption = DATA_DIR,
) -> None:
    """Revoke a key, at once."""
    with client(ctx, data_dir) as appliance:
        key = appliance.delete(f"/api-keys/{id}")
    typer.echo(f"API key {key['id']} ({key['name']}, of {key['owner']}) revoked")
