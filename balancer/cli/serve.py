"""Running the appliance on this machine: its first password, the daemon, the demo."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from balancer import defaults
from balancer.cli.answer import fail
from balancer.cli.appliance import DATA_DIR, DirOption, client, local_only
from balancer.cli.password import PasswordStdin, new_password


def init(
    ctx: typer.Context, data_dir: DirOption = DATA_DIR, password_stdin: PasswordStdin = False
) -> None:
    """Set the password of the WebUI user loadbalancer, or make one and show it once."""
    import getpass

    from balancer import first_start, users
    from balancer.store import Store, StoreError
    from balancer.validate import Invalid

    local_only(ctx, "init")
    given = new_password(defaults.USER, password_stdin)
    password = given or users.generate_password()
    try:
        with Store(first_start.prepare(data_dir)) as store:
            first_start.set_user_password(store, password, author=getpass.getuser())
            first_start.certificate(data_dir, store.node_settings().hostname)
    except (Invalid, StoreError) as error:
        fail(str(error))
    typer.echo(f"password of {defaults.USER} set" if given else first_start.announce(password))


def serve(
    ctx: typer.Context,
    data_dir: DirOption = DATA_DIR,
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
    workers: Annotated[
        int | None,
        typer.Option(help="relaying processes of the built-in engine, one per core; kept"),
    ] = None,
    metrics_allow: Annotated[
        list[str] | None,
        typer.Option(
            help="a network whose Prometheus reads /metrics with no API key, e.g. 10.1.0.0/16; "
            "repeat for more, 'none' for none; kept"
        ),
    ] = None,
) -> None:
    """Run the appliance: the management daemon, its WebUI, and the engine it supervises.

    On the first start, with nothing set up (`balancer setup`, `balancer init`), it asks
    `balancer setup`'s questions on a terminal; without one, it makes a password for the WebUI
    user loadbalancer and prints it, once."""
    import uvloop

    from balancer import software
    from balancer.daemon import serve as run
    from balancer.engines import ENGINES

    local_only(ctx, "serve")
    if engine is not None and engine not in ENGINES:
        fail(f"engine: {engine!r} is not one of {', '.join(ENGINES)}", 2)
    if sys.stdin.isatty() and sys.stdout.isatty():  # an operator at the console: ask, not make
        from balancer.cli.setup import first_run

        answered = {"listen": listen, "port": https_port}
        first_run(data_dir, {k: v for k, v in answered.items() if v is not None})
    given = {
        "engine": engine,
        "listen_address": listen,
        "https_port": https_port,
        "workers": workers,
    }
    changes: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
    if http_port is not None:
        changes["http_port"] = http_port or None  # 0: off
    if metrics_allow is not None:
        changes["metrics_allow"] = [network for network in metrics_allow if network != "none"]
    # The version a Software Update made current runs, whichever one was started.
    switched = software.Software(data_dir).next_python()
    if switched is None:
        try:
            switched = uvloop.run(run(data_dir, changes))
        except (OSError, ValueError) as error:
            fail(str(error))
    if switched is not None:
        software.execute(switched)


def stop(
    ctx: typer.Context,
    data_dir: DirOption = DATA_DIR,
    engine: Annotated[
        bool, typer.Option(help="stop the data plane too (drops connections)")
    ] = False,
) -> None:
    """Stop the management daemon; the data plane keeps running unless --engine."""
    with client(ctx, data_dir) as appliance:
        appliance.post("/shutdown", engine=str(engine).lower())
    typer.echo("stopping" + (" the appliance and its engine" if engine else " the daemon"))


def demo(
    ctx: typer.Context,
    root: Annotated[Path, typer.Option("--dir", help="where the demo keeps its state")] = Path(
        ".demo"
    ),
    servers: Annotated[int, typer.Option(help="how many simulated PSM servers")] = 2,
    check: Annotated[bool, typer.Option(help="set up, show the tour, then stop")] = False,
    engine: Annotated[str, typer.Option(help="builtin or haproxy")] = defaults.ENGINE,
) -> None:
    """The appliance with the CyberArk PSM preset in front of simulated PSM servers."""
    from balancer.demo import run

    local_only(ctx, "demo")
    raise typer.Exit(run(root.resolve(), servers, check, engine))
