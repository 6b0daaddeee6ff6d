"""The ``balancer`` command: a client of the appliance's API, one command per thing the guide
has the operator do. Errors are one line on stderr and a non-zero exit."""

from __future__ import annotations

import sys

import typer

from balancer.cli import config, lab, persistence, psm, rip, serve, status, vip

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False)
for command in (
    serve.init,
    serve.serve,
    serve.stop,
    status.status,
    status.changes,
    status.commit,
    status.logs,
    serve.demo,
):
    app.command()(command)
for group, name in (
    (vip.app, "vip"),
    (rip.app, "rip"),
    (config.app, "config"),
    (psm.app, "psm"),
    (persistence.app, "persistence"),
    (lab.app, "lab"),
):
    app.add_typer(group, name=name, no_args_is_help=True)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
