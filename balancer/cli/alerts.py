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


# A command's option -> the channel setting it gives.
SETTINGS = {
    **{o: o for o in ("url", "host", "port", "transport", "path", "facility", "username")},
    **{o: o for o in ("sender", "ca_file")},
    "to": "recipients",
}
Url = Annotated[str | None, typer.Option(help="webhook: where to POST")]
Host = Annotated[str | None, typer.Option(help="email, syslog: the server")]
Port = Annotated[int | None, typer.Option(help="email (587), syslog (514)")]
Transport = Annotated[str | None, typer.Option(help="syslog: udp, tcp or local")]
Path = Annotated[str | None, typer.Option(help="syslog: the local socket (/dev/log)")]
Facility = Annotated[int | None, typer.Option(help="syslog: 0-23 (16: local0)")]
Username = Annotated[str | None, typer.Option(help="email: the SMTP user")]
Sender = Annotated[str | None, typer.Option("--from", help="email: From")]
To = Annotated[list[str] | None, typer.Option(help="email: a recipient (repeat)")]
CaFile = Annotated[str | None, typer.Option(help="email: a PEM file to trust")]
SecretStdin = Annotated[
    bool,
    typer.Option(
        "--secret-stdin",
        help="read the SMTP password or the webhook's HMAC key from standard input",
    ),
]


@app.command("add")
def alerts_add(
    ctx: typer.Context,
    name: Name,
    kind: Kind,
    url: Url = None,
    host: Host = None,
    port: Port = None,
    transport: Transport = None,
    path: Path = None,
    facility: Facility = None,
    username: Username = None,
    sender: Sender = None,
    to: To = None,
    starttls: Annotated[bool, typer.Option(help="email: STARTTLS before AUTH")] = True,
    ca_file: CaFile = None,
    secret_stdin: SecretStdin = False,
    data_dir: DirOption = DATA_DIR,
) -> None:
    """Add a channel. Its secret (the SMTP password, the webhook's HMAC key) is asked for on a
    terminal, or read with --secret-stdin: never an option, which others could see in ps."""
    body = {"name": name, "kind": kind, **_given(locals())}
    if kind == "email":
        body["starttls"] = starttls
    secret = _secret(
        secret_stdin, kind != "syslog", "Secret (SMTP password or HMAC key; empty: none): "
    )
    if secret:
        body["secret"] = secret
    with client(ctx, data_dir) as appliance:
        made = appliance.post("/alerts/channels", body)
    typer.echo(f"alert channel {made['name']} ({made['kind']}) added")


@app.command("set")
def alerts_set(
    ctx: typer.Context,
    name: Name,
    url: Url = None,
    host: Host = None,
    port: Port = None,
    transport: Transport = None,
    path: Path = None,
    facility: Facility = None,
    username: Username = None,
    sender: Sender = None,
    to: Annotated[
        list[str] | None, typer.Option(help="email: a recipient (repeat: the new list)")
    ] = None,
    starttls: Annotated[
        bool | None, typer.Option("--starttls/--no-starttls", help="email: STARTTLS before AUTH")
    ] = None,
    ca_file: CaFile = None,
    secret_stdin: SecretStdin = False,
    new_secret: Annotated[
        bool, typer.Option("--new-secret", help="ask for a new secret on the terminal")
    ] = False,
    data_dir: DirOption = DATA_DIR,
) -> None:
    """Change a channel: only the options given; the rest, and its secret, are kept. A new
    secret is read with --secret-stdin, or asked for with --new-secret (empty: kept)."""
    body = _given(locals())
    if starttls is not None:
        body["starttls"] = starttls
    secret = _secret(secret_stdin, new_secret, "New secret (empty: keep the saved one): ")
    if secret:
        body["secret"] = secret
    with client(ctx, data_dir) as appliance:
        changed = appliance.patch(f"/alerts/channels/{name}", body)
    typer.echo(f"alert channel {changed['name']} ({changed['kind']}) changed")


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


def _given(options: dict[str, Any]) -> dict[str, Any]:
    """The channel settings among a command's options (its ``locals()``) that were given."""
    return {
        SETTINGS[option]: value
        for option, value in options.items()
        if option in SETTINGS and value is not None
    }


def _secret(from_stdin: bool, ask: bool, prompt: str) -> str:
    """A secret from standard input, or typed on a terminal unseen; never an option's value."""
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if ask and sys.stdin.isatty():
        return getpass.getpass(prompt)
    return ""


def _where(channel: dict[str, Any]) -> str:
    if channel["kind"] == "webhook":
        return str(channel["url"])
    if channel["kind"] == "email":
        return f"{channel['host']}:{channel['port']} to {', '.join(channel['recipients'])}"
    if channel["transport"] == "local":
        return str(channel["path"])
    return f"{channel['transport']}://{channel['host']}:{channel['port']}"
