"""The ``balancer`` command: a client of the appliance's API, one command per thing the guide
has the operator do. Errors are one line on stderr and a non-zero exit."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from balancer import defaults
from balancer.client import ApiError, Client, api_socket

T = TypeVar("T")

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False)
vip = typer.Typer(
    help="Virtual services (VIPs): Cluster Configuration > Layer 7 - Virtual Services"
)
rip = typer.Typer(help="Real servers (RIPs): Cluster Configuration > Layer 7 - Real Servers")
config = typer.Typer(help="View Configuration, and Backup & Restore")
psm = typer.Typer(help="The CyberArk PSM preset")
persistence = typer.Typer(help="The persistence (stick) table of a virtual service")
lab = typer.Typer(help="Simulated PSM servers for trying Balancer out")
for group, name in (
    (vip, "vip"),
    (rip, "rip"),
    (config, "config"),
    (psm, "psm"),
    (persistence, "persistence"),
    (lab, "lab"),
):
    app.add_typer(group, name=name, no_args_is_help=True)

DirOption = Annotated[
    Path,
    typer.Option("--dir", envvar="BALANCER_DIR", help="the appliance's data directory"),
]
JsonOption = Annotated[bool, typer.Option("--json", help="print the API's JSON")]
Sets = Annotated[
    list[str] | None,
    typer.Option("--set", help="any setting as dotted.name=value, e.g. health_check.rise=3"),
]


@contextmanager
def _client(data_dir: Path) -> Iterator[Client]:

    try:
        with Client(api_socket(data_dir)) as client:
            yield client
    except ApiError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None


def _print(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2))


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _settings(sets: list[str] | None, **known: Any) -> dict[str, Any]:
    """Options given on the command line, plus --set name=value, as a nested document."""
    body: dict[str, Any] = {key: value for key, value in known.items() if value is not None}
    for item in sets or []:
        name, sep, text = item.partition("=")
        if not sep or not name:
            typer.echo(f"error: --set {item!r}: expected name=value", err=True)
            raise typer.Exit(2)
        *parents, leaf = name.split(".")
        node = body
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = _value(text)
    return body


def _check(
    check: str | None, path: str | None, expect: str | None, port: int | None
) -> dict[str, Any] | None:
    found = {
        k: v for k, v in (("type", check), ("path", path), ("expect", expect), ("port", port)) if v
    }
    return found or None


def _saved(reply: dict[str, Any]) -> None:
    tail = " (commit to apply)" if reply.get("pending", True) else ""
    typer.echo(f"saved as revision {reply['revision']}{tail}")


def _new_password(from_stdin: bool) -> str | None:
    """The password the operator gives, or None to have one made."""
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if not sys.stdin.isatty():
        return None
    import getpass

    first = getpass.getpass(f"Password for {defaults.USER} (empty: make one): ")
    if first and getpass.getpass("Again: ") != first:
        typer.echo("error: password: the two differ", err=True)
        raise typer.Exit(1)
    return first or None


@app.command()
def init(
    data_dir: DirOption = Path(defaults.DATA_DIR),
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="read the password from standard input")
    ] = False,
) -> None:
    """Set the password of the WebUI user loadbalancer, or make one and show it once."""
    import getpass

    from balancer import first_start, users
    from balancer.store import Store, StoreError
    from balancer.validate import Invalid

    given = _new_password(password_stdin)
    password = given or users.generate_password()
    try:
        with Store(first_start.prepare(data_dir)) as store:
            first_start.set_user_password(store, password, author=getpass.getuser())
            first_start.certificate(data_dir, store.node_settings().hostname)
    except (Invalid, StoreError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"password of {defaults.USER} set" if given else first_start.announce(password))


@app.command()
def serve(
    data_dir: DirOption = Path(defaults.DATA_DIR),
    engine: Annotated[
        str | None, typer.Option(help="data plane engine, builtin or haproxy; kept for next time")
    ] = None,
    listen: Annotated[
        str | None,
        typer.Option(help="address of the WebUI and API; default every address; kept"),
    ] = None,
    https_port: Annotated[int | None, typer.Option(help="WebUI and API over HTTPS; kept")] = None,
    http_port: Annotated[
        int | None, typer.Option(help="plain HTTP WebUI, off by default; 0 turns it off; kept")
    ] = None,
) -> None:
    """Run the appliance: the management daemon, its WebUI, and the engine it supervises.

    On the first start, with no password set by `balancer init`, it makes one for the WebUI
    user loadbalancer and prints it, once."""
    import uvloop

    from balancer.daemon import serve as run
    from balancer.engines import ENGINES

    if engine is not None and engine not in ENGINES:
        typer.echo(f"error: engine: {engine!r} is not one of {', '.join(ENGINES)}", err=True)
        raise typer.Exit(2)
    given = {"engine": engine, "listen_address": listen, "https_port": https_port}
    changes: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
    if http_port is not None:
        changes["http_port"] = http_port or None  # 0: off
    try:
        uvloop.run(run(data_dir, changes))
    except (OSError, ValueError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None


@app.command()
def stop(
    data_dir: DirOption = Path(defaults.DATA_DIR),
    engine: Annotated[
        bool, typer.Option(help="stop the data plane too (drops connections)")
    ] = False,
) -> None:
    """Stop the management daemon; the data plane keeps running unless --engine."""
    with _client(data_dir) as client:
        client.post("/shutdown", engine=str(engine).lower())
    typer.echo("stopping" + (" the appliance and its engine" if engine else " the daemon"))


@app.command()
def status(data_dir: DirOption = Path(defaults.DATA_DIR), as_json: JsonOption = False) -> None:
    """System Overview: every virtual service and real server, live."""
    from balancer.overview import render

    with _client(data_dir) as client:
        overview = client.get("/status")
    _print(overview) if as_json else typer.echo(render(overview))


@app.command()
def changes(data_dir: DirOption = Path(defaults.DATA_DIR)) -> None:
    """Show saved changes that a commit will apply."""
    with _client(data_dir) as client:
        pending = client.get("/changes")
    if not pending["changes"]:
        typer.echo(f"nothing to commit: revision {pending['head']} is running")
        return
    typer.echo(f"revision {pending['head']} saved, {pending['applied']} running:")
    for change in pending["changes"]:
        typer.echo(f"  {change}")


@app.command()
def commit(data_dir: DirOption = Path(defaults.DATA_DIR)) -> None:
    """Apply the saved configuration (the guide's "Reload HAProxy")."""
    with _client(data_dir) as client:
        applied = client.post("/commit")
    typer.echo(f"revision {applied['revision']} is running")


@app.command()
def logs(
    data_dir: DirOption = Path(defaults.DATA_DIR),
    limit: int = 50,
    source: Annotated[str | None, typer.Option(help="engine or appliance")] = None,
) -> None:
    """The engine's and the appliance's logs, newest last."""
    import time

    with _client(data_dir) as client:
        entries = client.get("/logs", limit=limit, source=source)
    for entry in reversed(entries):
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry["time"]))
        typer.echo(f"{when} {entry.get('source', '-'):9} {entry['level']:7} {entry['message']}")


@vip.command("list")
def vip_list(data_dir: DirOption = Path(defaults.DATA_DIR), as_json: JsonOption = False) -> None:
    """List the saved virtual services."""
    with _client(data_dir) as client:
        services = client.get("/virtual-services")
    if as_json:
        _print(services)
        return
    for vs in services:
        typer.echo(
            f"{vs['label']:24} {vs['ip']:>18}:{vs['ports']:<12} {vs['balancing']:18} "
            f"persistence={vs['persistence']['mode']} check={vs['health_check']['type']} "
            f"real_servers={len(vs['real_servers'])}"
        )


@vip.command("show")
def vip_show(label: str, data_dir: DirOption = Path(defaults.DATA_DIR)) -> None:
    """Show one virtual service with every setting."""
    with _client(data_dir) as client:
        _print(client.get(f"/virtual-services/{label}"))


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
    return _settings(
        sets, **more, ip=ip, ports=ports, balancing=balancing,
        persistence={"mode": persistence_mode} if persistence_mode else None,
        health_check=_check(check, check_path, check_expect, check_port),
    )  # fmt: skip


@vip.command("add")
def vip_add(
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
    data_dir: DirOption = Path(defaults.DATA_DIR),
) -> None:
    """Add a virtual service (saved; commit to apply). --ip and --ports are needed."""
    body = _service_body(sets, ip, ports, balancing, persistence_mode, check, check_path,
                         check_expect, check_port, label=label)  # fmt: skip
    with _client(data_dir) as client:
        _saved(client.post("/virtual-services", body))


@vip.command("modify")
def vip_modify(
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
    data_dir: DirOption = Path(defaults.DATA_DIR),
) -> None:
    """Modify a virtual service: only the settings given change."""
    body = _service_body(sets, ip, ports, balancing, persistence_mode, check, check_path,
                         check_expect, check_port)  # fmt: skip
    with _client(data_dir) as client:
        _saved(client.patch(f"/virtual-services/{label}", body))


@vip.command("remove")
def vip_remove(label: str, data_dir: DirOption = Path(defaults.DATA_DIR)) -> None:
    """Remove a virtual service and its real servers."""
    with _client(data_dir) as client:
        _saved(client.delete(f"/virtual-services/{label}"))


@rip.command("list")
def rip_list(service: str, data_dir: DirOption = Path(defaults.DATA_DIR)) -> None:
    """List the real servers of a virtual service."""
    with _client(data_dir) as client:
        for rs in client.get(f"/virtual-services/{service}/real-servers"):
            typer.echo(
                f"{rs['label']:16} {rs['ip']:>18}:{rs['port'] or '(same)':<6} "
                f"weight={rs['weight']} state={rs['state']}"
            )


@rip.command("add")
def rip_add(
    service: str,
    label: str,
    ip: Annotated[str, typer.Option(help="Real Server IP Address")],
    port: Annotated[int | None, typer.Option(help="Real Server Port; default: the VIP's")] = None,
    weight: Annotated[int | None, typer.Option(help="0..256, default 100")] = None,
    sets: Sets = None,
    data_dir: DirOption = Path(defaults.DATA_DIR),
) -> None:
    """Add a real server to a virtual service (saved; commit to apply)."""
    body = _settings(sets, label=label, ip=ip, port=port, weight=weight)
    with _client(data_dir) as client:
        _saved(client.post(f"/virtual-services/{service}/real-servers", body))


@rip.command("modify")
def rip_modify(
    service: str,
    label: str,
    ip: Annotated[str | None, typer.Option()] = None,
    port: Annotated[int | None, typer.Option()] = None,
    weight: Annotated[int | None, typer.Option()] = None,
    sets: Sets = None,
    data_dir: DirOption = Path(defaults.DATA_DIR),
) -> None:
    """Modify a real server: only the settings given change."""
    body = _settings(sets, ip=ip, port=port, weight=weight)
    with _client(data_dir) as client:
        _saved(client.patch(f"/virtual-services/{service}/real-servers/{label}", body))


@rip.command("remove")
def rip_remove(service: str, label: str, data_dir: DirOption = Path(defaults.DATA_DIR)) -> None:
    """Remove a real server; its established connections run until they end."""
    with _client(data_dir) as client:
        _saved(client.delete(f"/virtual-services/{service}/real-servers/{label}"))


def _set_state(service: str, label: str, state: str, data_dir: Path) -> None:
    with _client(data_dir) as client:
        reply = client.post(
            f"/virtual-services/{service}/real-servers/{label}/state", {"state": state}
        )
    typer.echo(f"{service}/{label} is now {state} (revision {reply['revision']})")


@rip.command("drain")
def rip_drain(service: str, label: str, data_dir: DirOption = Path(defaults.DATA_DIR)) -> None:
    """No new clients now; persistent and established ones stay."""
    _set_state(service, label, "drain", data_dir)


@rip.command("halt")
def rip_halt(service: str, label: str, data_dir: DirOption = Path(defaults.DATA_DIR)) -> None:
    """No new connections now, not even persistent ones; established ones run to their end."""
    _set_state(service, label, "halt", data_dir)


@rip.command("online")
def rip_online(service: str, label: str, data_dir: DirOption = Path(defaults.DATA_DIR)) -> None:
    """Take clients again now."""
    _set_state(service, label, "online", data_dir)


@config.command("show")
def config_show(
    engine: Annotated[bool, typer.Option("--engine", help="as the engine runs it")] = False,
    data_dir: DirOption = Path(defaults.DATA_DIR),
) -> None:
    """The configuration as saved, or as the engine runs it (haproxy.cfg for HAProxy)."""
    with _client(data_dir) as client:
        if engine:
            typer.echo(client.get("/config/engine"), nl=False)
        else:
            _print(client.get("/config"))


@config.command("export")
def config_export(
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="file; default stdout")
    ] = None,
    data_dir: DirOption = Path(defaults.DATA_DIR),
) -> None:
    """Back up the whole configuration as a versioned document."""
    with _client(data_dir) as client:
        document = client.get("/backup")
    text = json.dumps(document, indent=2) + "\n"
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text)
        typer.echo(f"revision {document['revision']} written to {output}")


@config.command("import")
def config_import(file: Path, data_dir: DirOption = Path(defaults.DATA_DIR)) -> None:
    """Restore a backup document: checked first, then saved as a new revision."""
    try:
        document = json.loads(file.read_text())
    except (OSError, ValueError) as error:
        typer.echo(f"error: {file}: {error}", err=True)
        raise typer.Exit(1) from None
    with _client(data_dir) as client:
        _saved(client.post("/restore", document))


@psm.command("create")
def psm_create(
    rdp_vip: Annotated[str, typer.Option(help="VIP 1 address (CyberArk-PSM, RDP)")],
    web_vip: Annotated[str, typer.Option(help="VIP 2 address (CyberArk-PSM-Web, HTML5)")],
    server: Annotated[list[str], typer.Option(help="a PSM server as LABEL=IP; repeat")],
    recommended: Annotated[
        bool, typer.Option(help="CyberArk's least connections + RDP check")
    ] = False,
    rdp_port: int = 3389,
    web_port: int = 443,
    commit_now: Annotated[bool, typer.Option("--commit", help="apply at once")] = False,
    data_dir: DirOption = Path(defaults.DATA_DIR),
) -> None:
    """Create both virtual services of the CyberArk PSM guide for the given PSM servers."""
    servers = []
    for item in server:
        name, sep, address = item.partition("=")
        if not sep:
            typer.echo(
                f"error: --server {item!r}: expected LABEL=IP, e.g. PSM1=192.168.94.105", err=True
            )
            raise typer.Exit(2)
        servers.append((name, address))
    body = {
        "rdp_vip": rdp_vip,
        "web_vip": web_vip,
        "servers": servers,
        "recommended": recommended,
        "rdp_port": rdp_port,
        "web_port": web_port,
    }
    with _client(data_dir) as client:
        reply = client.post("/presets/psm", body)
        if commit_now:
            applied = client.post("/commit")
            typer.echo(f"CyberArk PSM services created; revision {applied['revision']} running")
        else:
            _saved(reply)


@persistence.command("list")
def persistence_list(service: str, data_dir: DirOption = Path(defaults.DATA_DIR)) -> None:
    """Which client sticks to which real server, and for how much longer."""
    with _client(data_dir) as client:
        for entry in client.get(f"/virtual-services/{service}/persistence"):
            typer.echo(f"{entry['client']:>40} -> {entry['server']:16} {entry['expires_in']}s")


@persistence.command("clear")
def persistence_clear(service: str, data_dir: DirOption = Path(defaults.DATA_DIR)) -> None:
    """Forget every persistent client of a virtual service."""
    with _client(data_dir) as client:
        cleared = client.delete(f"/virtual-services/{service}/persistence")
    typer.echo(f"{cleared['cleared']} entries cleared")


def _lab(request: Coroutine[Any, Any, T]) -> T:
    """Run one request to the lab's control socket; a failure is one line and exit 1."""
    from balancer.control import ControlError

    try:
        return asyncio.run(request)
    except ControlError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None


LabDir = Annotated[
    Path,
    typer.Option(
        "--lab-dir",
        envvar="BALANCER_LAB_DIR",
        help="where the lab keeps its socket and certificates",
    ),
]


@lab.command("start")
def lab_start(
    servers: Annotated[int, typer.Option(help="how many PSM servers")] = 2,
    lab_dir: LabDir = Path("/tmp/balancer-lab"),
) -> None:
    """Run simulated PSM servers (PSM1 on 127.94.0.105, PSM2 on .106, ...) until stopped."""
    from balancer.lab.process import default_specs, run

    privileged = os.geteuid() == 0
    specs = default_specs(servers, privileged)
    if not privileged:
        typer.echo("not root: the lab uses ports 13389 and 10443 instead of 3389 and 443", err=True)
    for spec in specs:
        typer.echo(f"{spec.name}: RDP {spec.ip}:{spec.rdp_port}, HTTPS {spec.ip}:{spec.https_port}")
    run(specs, lab_dir)


@lab.command("set")
def lab_set(
    server: str,
    mode: Annotated[str, typer.Argument(help="pass, fail, hang or down")],
    lab_dir: LabDir = Path("/tmp/balancer-lab"),
) -> None:
    """Make a lab PSM server pass or fail its health check, hang, or go down."""
    from balancer.lab.process import set_mode

    _lab(set_mode(lab_dir, server, mode))
    typer.echo(f"{server} is now {mode}")


@lab.command("status")
def lab_status_command(lab_dir: LabDir = Path("/tmp/balancer-lab")) -> None:
    """Each lab PSM server's mode and connections."""
    from balancer.lab.process import lab_status

    _print(_lab(lab_status(lab_dir)))


@lab.command("stop")
def lab_stop(lab_dir: LabDir = Path("/tmp/balancer-lab")) -> None:
    """Stop the lab."""
    from balancer.lab.process import stop_lab

    _lab(stop_lab(lab_dir))


@app.command()
def demo(
    root: Annotated[Path, typer.Option("--dir", help="where the demo keeps its state")] = Path(
        ".demo"
    ),
    servers: Annotated[int, typer.Option(help="how many simulated PSM servers")] = 2,
    check: Annotated[bool, typer.Option(help="set up, show the tour, then stop")] = False,
    engine: Annotated[str, typer.Option(help="builtin or haproxy")] = defaults.ENGINE,
) -> None:
    """The appliance with the CyberArk PSM preset in front of simulated PSM servers."""
    from balancer.demo import run

    raise typer.Exit(run(root.resolve(), servers, check, engine))


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
