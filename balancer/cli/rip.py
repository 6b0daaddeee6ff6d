"""Real servers (RIPs): the guide's Cluster Configuration > Layer 7 - Real Servers, and their
drain, halt and online, which act at once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from balancer.cli.answer import saved
from balancer.cli.appliance import DATA_DIR, DirOption, client
from balancer.cli.settings import Sets, settings

app = typer.Typer(help="Real servers (RIPs): Cluster Configuration > Layer 7 - Real Servers")


@app.command("list")
def rip_list(ctx: typer.Context, service: str, data_dir: DirOption = DATA_DIR) -> None:
    """List the real servers of a virtual service."""
    with client(ctx, data_dir) as appliance:
        for rs in appliance.get(f"/virtual-services/{service}/real-servers"):
            typer.echo(
                f"{rs['label']:16} {rs['ip']:>18}:{rs['port'] or '(same)':<6} "
                f"weight={rs['weight']} state={rs['state']}"
            )


@app.command("add")
def rip_add(
    ctx: typer.Context,
    service: str,
    label: str,
    ip: Annotated[str, typer.Option(help="Real Server IP Address")],
    port: Annotated[int | None, typer.Option(help="Real Server Port; default: the VIP's")] = None,
    weight: Annotated[int | None, typer.Option(help="0..256, default 100")] = None,
    sets: Sets = None,
    data_dir: DirOption = DATA_DIR,
) -> None:
    """Add a real server to a virtual service (saved; commit to apply)."""
    body = settings(sets, label=label, ip=ip, port=port, weight=weight)
    with client(ctx, data_dir) as appliance:
        saved(appliance.post(f"/virtual-services/{service}/real-servers", body))


@app.command("modify")
def rip_modify(
    ctx: typer.Context,
    service: str,
    label: str,
    ip: Annotated[str | None, typer.Option()] = None,
    port: Annotated[int | None, typer.Option()] = None,
    weight: Annotated[int | None, typer.Option()] = None,
    sets: Sets = None,
    data_dir: DirOption = DATA_DIR,
) -> None:
    """Modify a real server: only the settings given change."""
    body = settings(sets, ip=ip, port=port, weight=weight)
    with client(ctx, data_dir) as appliance:
        saved(appliance.patch(f"/virtual-services/{service}/real-servers/{label}", body))


@app.command("remove")
def rip_remove(
    ctx: typer.Context, service: str, label: str, data_dir: DirOption = DATA_DIR
) -> None:
    """Remove a real server; its established connections run until they end."""
    with client(ctx, data_dir) as appliance:
        saved(appliance.delete(f"/virtual-services/{service}/real-servers/{label}"))


def _set_state(ctx: typer.Context, service: str, label: str, state: str, data_dir: Path) -> None:
    with client(ctx, data_dir) as appliance:
        reply = appliance.post(
            f"/virtual-services/{service}/real-servers/{label}/state", {"state": state}
        )
    typer.echo(f"{service}/{label} is now {state} (revision {reply['revision']})")


@app.command("drain")
def rip_drain(ctx: typer.Context, service: str, label: str, data_dir: DirOption = DATA_DIR) -> None:
    """No new clients now; persistent and established ones stay."""
    _set_state(ctx, service, label, "drain", data_dir)


@app.command("halt")
def rip_halt(ctx: typer.Context, service: str, label: str, data_dir: DirOption = DATA_DIR) -> None:
    """No new connections now, not even persistent ones; established ones run to their end."""
    _set_state(ctx, service, label, "halt", data_dir)


@app.command("online")
def rip_online(
    ctx: typer.Context, service: str, label: str, data_dir: DirOption = DATA_DIR
) -> None:
    """Take clients again now."""
    _set_state(ctx, service, label, "online", data_dir)
