"""Virtual services (VIPs): the guide's Cluster Configuration > Layer 7 - Virtual Services."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from balancer.cli.answer import JsonOption, echo_json, saved
from balancer.cli.appliance import DATA_DIR, DirOption, client
from balancer.cli.settings import Sets, settings

app = typer.Typer(
    help="Virtual services (VIPs): Cluster Configuration > Layer 7 - Virtual Services"
)


@app.command("list")
def vip_list(
    ctx: typer.Context, data_dir: DirOption = DATA_DIR, as_json: JsonOption = False
) -> None:
    """List the saved virtual services."""
    with client(ctx, data_dir) as appliance:
        services = appliance.get("/virtual-services")
    if as_json:
        echo_json(services)
        return
    for vs in services:
        typer.echo(
            f"{vs['label']:24} {vs['ip']:>18}:{vs['ports']:<12} {vs['balancing']:18} "
            f"persistence={vs['persistence']['mode']} check={vs['health_check']['type']} "
            f"real_servers={len(vs['real_servers'])}"
        )


@app.command("show")
def vip_show(ctx: typer.Context, label: str, data_dir: DirOption = DATA_DIR) -> None:
    """Show one virtual service with every setting."""
    with client(ctx, data_dir) as appliance:
        echo_json(appliance.get(f"/virtual-services/{label}"))


IpOption = Annotated[str | None, typer.Option(help="the Virtual Service IP Address")]
PortsOption = Annotated[str | None, typer.Option(help="e.g. 3389, or 3389,3390, or 8000-8010")]
BalancingOption = Annotated[
    str | None, typer.Option(help="round_robin or least_connections (both weighted)")
]
PersistenceOption = Annotated[str | None, typer.Option("--persistence", help="source_ip or none")]
CheckOption = Annotated[
    str | None, typer.Option(help="health check: none, connect, http, https, external")
]
CheckPathOption = Annotated[str | None, typer.Option(help="Request to Send, e.g. /psm/api/health")]
CheckExpectOption = Annotated[str | None, typer.Option(help="Response Expected, e.g. PASS")]
CheckPortOption = Annotated[int | None, typer.Option(help="Check Port, if not the server's")]


def _check(
    check: str | None, path: str | None, expect: str | None, port: int | None
) -> dict[str, Any] | None:
    found = {
        k: v for k, v in (("type", check), ("path", path), ("expect", expect), ("port", port)) if v
    }
    return found or None


def _service_body(
    sets: list[str] | None,
    ip: str | None,
    ports: str | None,
    balancing: str | None,
    persistence_mode: str | None,
    check: str | None,
    check_path: str | None,
    check_expect: str | None,
    check_port: int | None,
    **more: Any,
) -> dict[str, Any]:
    return settings(
        sets, **more, ip=ip, ports=ports, balancing=balancing,
        persistence={"mode": persistence_mode} if persistence_mode else None,
        health_check=_check(check, check_path, check_expect, check_port),
    )  # fmt: skip


@app.command("add")
def vip_add(
    ctx: typer.Context,
    label: str,
    ip: IpOption = None,
    ports: PortsOption = None,
    balancing: BalancingOption = None,
    persistence_mode: PersistenceOption = None,
    check: CheckOption = None,
    check_path: CheckPathOption = None,
    check_expect: CheckExpectOption = None,
    check_port: CheckPortOption = None,
    sets: Sets = None,
    data_dir: DirOption = DATA_DIR,
) -> None:
    """Add a virtual service (saved; commit to apply). --ip and --ports are needed."""
    body = _service_body(sets, ip, ports, balancing, persistence_mode, check, check_path,
                         check_expect, check_port, label=label)  # fmt: skip
    with client(ctx, data_dir) as appliance:
        saved(appliance.post("/virtual-services", body))


@app.command("modify")
def vip_modify(
    ctx: typer.Context,
    label: str,
    ip: IpOption = None,
    ports: PortsOption = None,
    balancing: BalancingOption = None,
    persistence_mode: PersistenceOption = None,
    check: CheckOption = None,
    check_path: CheckPathOption = None,
    check_expect: CheckExpectOption = None,
    check_port: CheckPortOption = None,
    sets: Sets = None,
    data_dir: DirOption = DATA_DIR,
) -> None:
    """Modify a virtual service: only the settings given change."""
    body = _service_body(sets, ip, ports, balancing, persistence_mode, check, check_path,
                         check_expect, check_port)  # fmt: skip
    with client(ctx, data_dir) as appliance:
        saved(appliance.patch(f"/virtual-services/{label}", body))


@app.command("remove")
def vip_remove(ctx: typer.Context, label: str, data_dir: DirOption = DATA_DIR) -> None:
    """Remove a virtual service and its real servers."""
    with client(ctx, data_dir) as appliance:
        saved(appliance.delete(f"/virtual-services/{label}"))
