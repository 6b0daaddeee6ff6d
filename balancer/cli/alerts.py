"""Alert channels: where this node sends its alerts (e-mail, webhook, syslog), and Send test."""

from __future__ import annotations

import getpass
import sys
from typing import Annotated, Any

import typer

from balancer.cli.answer import JsonOption, echo_json
from balancer.cli.appliance import DATA_DIR, DirOption, client

app = typer.Typer(help="Alert channels: e-mail, webhook and syslog, each with a Send test")

Kind = Annotated[str, typer.Argument(help="email, webhook or syslog")]
Name = Annotated[str, typer.Argument(help="the channel's name, e.g. ops-mail")]


@app.command("list")
def alerts_list(
    ctx: typer.Context, data_dir: DirOption = DATA_DIR, as_json: JsonOption = False
) -> None:
    """List the channels; a secret shows only as "set"."""
    with client(ctx, data_dir) as appliance:
        found = appliance.get("/alerts/channels")
    if as_json:
        echo_json(found)
        return
    for channel in found:
        where = _where(channel)
        secret = "  secret set" if channel["secret"] else ""
        typer.echo(f"{channel['name']:24} {channel['kind']:8} {where}{secret}")


@app.command("add")
def alerts_add(
    ctx: typer.Context,
    name: Name,
    kind: Kind,
    url: Annotated[str | None, typer.Option(help="webhook: where to POST")] = None,
    host: Annotated[str | None, typer.Option(help="email, syslog: the server")] = None,
    port: Annotated[int | None, typer.Option(help="email (587), syslog (514)")] = None,
    transport: Annotated[str | None, typer.Option(help="syslog: udp, tcp or local")] = None,
    path: Annotated[str | None, typer.Option(help="syslog: the local socket (/dev/log)")] = None,
    facility: Annotated[int | None, typer.Option(help="syslog: 0-23 (16: local0)")] = None,
    username: Annotated[str | None, typer.Option(help="email: the SMTP user")] = None,
    sender: Annotated[str | None, typer.Option("--from", help="email: From")] = None,
    to: Annotated[list[str] | None, typer.Option(help="email: a recipient (repeat)")] = None,
    starttls: Annotated[bool, typer.Option(help="email: STARTTLS before AUTH")] = True,
    ca_file: Annotated[str | None, typer.Option(help="email: a PEM file to trust")] = None,
    secret_stdin: Annotated[
        bool,
        typer.Option(
            "--secret-stdin",
            help="read the SMTP password or the webhook's HMAC key from standard input",
        ),
    ] = False,
    data_dir: DirOption = DATA_DIR,
) -> None:
    """Add a channel. Its secret (the SMTP password, the webhook's HMAC key) is asked for on a
    terminal, or read with --secret-stdin: never an option, which others could see in ps."""
    given: dict[str, Any] = {
        "url": url,
        "host": host,
        "port": port,
        "transport": transport,
        "path": path,
        "facility": facility,
        "username": username,
        "sender": sender,
        "recipients": to,
        "ca_file": ca_file,
    }
    body = {"name": name, "kind": kind, **{k: v for k, v in given.items() if v is not None}}
    if kind == "email":
        body["starttls"] = starttls
    if secret_stdin:
        body["secret"] = sys.stdin.readline().rstrip("\r\n")
    elif kind != "syslog" and sys.stdin.isatty():
        body["secret"] = getpass.getpass("Secret (SMTP password or HMAC key; empty: none): ")
    with client(ctx, data_dir) as appliance:
        made = appliance.post("/alerts/channels", body)
    typer.echo(f"alert channel {made['name']} ({made['kind']}) added")


@app.command("remove")
def alerts_remove(ctx: typer.Context, name: Name, data_dir: DirOption = DATA_DIR) -> None:
    """Remove a channel."""
    with client(ctx, data_dir) as appliance:
        appliance.delete(f"/alerts/channels/{name}")
    typer.echo(f"alert channel {name} removed")


@app.command("test")
def alerts_test(ctx: typer.Context, name: Name, data_dir: DirOption = DATA_DIR) -> None:
    """Send test: one message through the channel, now, once; the reason if it fails."""
    with client(ctx, data_dir) as appliance:
        appliance.post(f"/alerts/channels/{name}/test")
    typer.echo(f"test alert sent through {name}")


def _where(channel: dict[str, Any]) -> str:
    if channel["kind"] == "webhook":
        return str(channel["url"])
    if channel["kind"] == "email":
        return f"{channel['host']}:{channel['port']} to {', '.join(channel['recipients'])}"
    if channel["transport"] == "local":
        return str(channel["path"])
    return f"{channel['transport']}://{channel['host']}:{channel['port']}"
