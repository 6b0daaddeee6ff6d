"""The clustered HA pair: the guide's Cluster Configuration > High-Availability Configuration."""

from __future__ import annotations

import getpass
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from balancer.cli.answer import JsonOption, echo_json, fail
from balancer.cli.appliance import DATA_DIR, DirOption, client
from balancer.cli.password import PasswordStdin
from balancer.client import ApiError

app = typer.Typer(
    help="The clustered HA pair: pair two nodes, see both, set the pair's HA settings, restart "
    "heartbeat, switch over, break the pair"
)

# Pairing waits on the peer: its answer to the offer, then its engine running this node's
# configuration.
PAIR_TIMEOUT = 180.0
_MARKS = {"done": "ok", "running": "..", "waiting": "??", "failed": "!!"}
# Restart Heartbeat waits on each node's keepalived in turn, the peer's for up to 30 s.
HEARTBEAT_TIMEOUT = 120.0


@app.command("pair")
def pair(
    ctx: typer.Context,
    local: Annotated[str, typer.Option("--local", help="this node's address, the Primary's")],
    peer: Annotated[str, typer.Option("--peer", help="the new peer's address, the Secondary's")],
    fingerprint: Annotated[
        str,
        typer.Option(
            "--fingerprint",
            help="the SHA-256 fingerprint of the peer's WebUI certificate, as its `balancer "
            "serve` printed it: the password is sent to that certificate only",
        ),
    ],
    port: Annotated[int, typer.Option("--port", help="the peer's WebUI HTTPS port")] = 9443,
    password_stdin: PasswordStdin = False,
    replace: Annotated[
        bool | None,
        typer.Option(
            "--replace/--keep",
            help="replace the services the peer has of its own, or refuse to; asked if unset",
        ),
    ] = None,
    data_dir: DirOption = DATA_DIR,
) -> None:
    """Add new node: pair this node, the Primary, with a peer (the guide's 14.1.2)."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif sys.stdin.isatty():
        password = getpass.getpass(f"Password of the loadbalancer user on {peer}: ")
    else:
        fail("password: give it at the prompt, or with --password-stdin", 2)
    body: dict[str, Any] = {
        "local_address": local,
        "peer_address": peer,
        "peer_port": port,
        "password": password,
        "fingerprint": fingerprint,
        "replace": replace,
    }
    typer.echo("Attempting to pair…")
    with client(ctx, data_dir) as appliance:
        appliance.timeout = PAIR_TIMEOUT
        try:
            answer = appliance.post("/ha/pair", body)
        except ApiError as error:
            question = str(error).removeprefix("replace: ")
            if error.status != 409 or question == str(error):
                raise
            if password_stdin or not sys.stdin.isatty():
                fail(f"{question} Give --replace to replace them, or --keep")
            body["replace"] = typer.confirm(question, default=False)
            answer = appliance.post("/ha/pair", body)
    for step in answer["steps"][1:]:
        typer.echo(f"  {_MARKS.get(step['progress'], '  ')} {step['text']}")


@app.command("status")
def status(ctx: typer.Context, data_dir: DirOption = DATA_DIR, as_json: JsonOption = False) -> None:
    """Both nodes of the pair: role, state, running revision, sync and engine; the link; and
    the node settings the two differ in (drift)."""
    with client(ctx, data_dir) as appliance:
        found = appliance.get("/ha")
    if as_json:
        echo_json(found)
        return
    view = found["pair"]
    if view is None:
        typer.echo("standalone: this node is in no HA pair")
        return
    typer.echo(_node("this node", view["this"]))
    peer = view["peer"]
    typer.echo(_node("peer", peer) if peer is not None else "peer       not heard yet")
    link = view["link"]
    typer.echo(
        "link: the peer has not answered yet"
        if link is None
        else f"link: the peer last answered {link:.1f} s ago"
    )
    for line in _split_brain(view.get("split_brain")):
        typer.echo(line)
    for line in _replication(found.get("replication")):
        typer.echo(line)
    typer.echo(_drift(found["drift"]))
    settings = found["settings"]
    profile = f" ({settings['profile']})" if settings["profile"] else ""
    typer.echo(
        f"settings: advert interval {settings['advert_interval']:g} s{profile}, "
        f"preemption {'on' if settings['preempt'] else 'off'}, "
        f"replication port {settings['replication_port']}"
    )


def _split_brain(alarm: dict[str, Any] | None) -> list[str]:
    """The split-brain alarm, while raised: since when, and each piece of evidence."""
    if alarm is None or not alarm["raised"]:
        return []
    since = alarm["since"]
    at = "" if since is None else time.strftime(" since %Y-%m-%d %H:%M:%S UTC", time.gmtime(since))
    return [f"SPLIT BRAIN: both nodes hold the floating IPs{at}"] + [
        f"  {evidence}" for evidence in alarm["evidence"]
    ]


def _drift(drift: dict[str, Any] | None) -> str:
    """The Drift part: each node setting the two nodes differ in, both values and why."""
    if drift is None or drift["unseen"] is not None:
        return f"drift: not compared: {'standalone' if drift is None else drift['unseen']}"
    differing = [row for row in drift["rows"] if row["differs"]]
    if not differing:
        return "drift: none, the nodes agree on every setting Balancer can see"
    lines = [f"drift: the nodes differ in {len(differing)} of {len(drift['rows'])} settings"]
    lines += [
        f"  {row['setting']}: this node {row['this']}; peer {row['peer']} ({row['why']})"
        for row in differing
    ]
    return "\n".join(lines)


def _node(name: str, node: dict[str, Any]) -> str:
    revision = node["revision"]
    running = f"revision {revision}" if revision is not None else "no revision"
    engine = node["engine"] + (f" ({node['engine_error']})" if node["engine_error"] else "")
    return (
        f"{name:10} {node['address']:15} {node['role'].title():9} {node['state'].title():8} "
        f"{running:14} sync {node['sync']}; engine {engine}"
    )


def _replication(shown: dict[str, Any] | None) -> list[str]:
    """Each persistence table on both nodes (replication.Shown): entries, link and lag."""
    if shown is None:  # a node of an older Balancer
        return []
    names = ["this node" if node["this"] else "peer" for node in shown["nodes"]]
    if not shown["tables"]:
        lines = ["persistence replication: no persistence table yet"]
        for name, node in zip(names, shown["nodes"], strict=True):
            lines.append(f"    {name:9} {node['node']:15} {node['link']}")
        return lines
    lines = ["persistence replication:"]
    for table in shown["tables"]:
        lines.append(f"  table {table['service']}: {table['entries']}")
        for name, side in zip(names, table["nodes"], strict=True):
            lines.append(f"    {name:9} {side['node']:15} {side['link']}; {side['behind']}")
    return lines


@app.command("set")
def set_settings(
    ctx: typer.Context,
    profile: Annotated[
        str | None,
        typer.Option("--profile", help="default (adverts every 0.2 s) or conservative (1 s)"),
    ] = None,
    advert: Annotated[
        float | None,
        typer.Option("--advert", help="seconds between VRRP adverts, in hundredths, instead"),
    ] = None,
    preempt: Annotated[
        bool | None,
        typer.Option(
            "--preempt/--no-preempt",
            help="whether a Primary that comes back takes the floating IPs back",
        ),
    ] = None,
    replication_port: Annotated[
        int | None,
        typer.Option("--replication-port", help="where the engines replicate persistence (7778)"),
    ] = None,
    data_dir: DirOption = DATA_DIR,
) -> None:
    """The pair's HA settings, on the Primary: both nodes' keepalived reload with them (no
    floating IP moves) and their engines replicate on the port; what is not given stays."""
    body = {
        "profile": profile,
        "advert_interval": advert,
        "preempt": preempt,
        "replication_port": replication_port,
    }
    given = {name: value for name, value in body.items() if value is not None}
    if not given:
        fail("give --profile, --advert, --preempt, --no-preempt or --replication-port", 2)
    with client(ctx, data_dir) as appliance:
        typer.echo(appliance.patch("/ha", given)["message"])


@app.command("break")
def break_pair(ctx: typer.Context, data_dir: DirOption = DATA_DIR) -> None:
    """Break Clustered Pair: both nodes stand alone, each with its configuration and users."""
    with client(ctx, data_dir) as appliance:
        answer = appliance.delete("/ha/pair")
    for node in answer["nodes"]:
        typer.echo(node["said"])


@app.command("restart-heartbeat")
def restart_heartbeat(ctx: typer.Context, data_dir: DirOption = DATA_DIR) -> None:
    """Restart Heartbeat, on the Primary: keepalived on both nodes, one at a time, the Passive
    node first, so the VIPs never go dark."""
    _heartbeat(ctx, data_dir, "/ha/heartbeat/restart")


@app.command("switchover")
def switchover(ctx: typer.Context, data_dir: DirOption = DATA_DIR) -> None:
    """Make the other node Active, refusing no new connection; refused unless it is Passive."""
    _heartbeat(ctx, data_dir, "/ha/switchover")


def _heartbeat(ctx: typer.Context, data_dir: Path, path: str) -> None:
    with client(ctx, data_dir) as appliance:
        appliance.timeout = HEARTBEAT_TIMEOUT
        typer.echo(appliance.post(path)["message"])
