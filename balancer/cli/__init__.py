"""The ``balancer`` command: a client of the appliance's API, one command per thing the guide
has the operator do. Errors are one line on stderr and a non-zero exit."""

from __future__ import annotations

import logging
import sys

import typer

from balancer.cli import config, keys, lab, persistence, psm, rip, serve, status, users, vip
from balancer.cli.appliance import Connection, IfMatchOption
from balancer.cli.remote import (
    CaFileOption,
    FingerprintOption,
    InsecureOption,
    KeyFileOption,
    RemoteOptions,
    UrlOption,
)

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False)


@app.callback()
def connection(
    context: typer.Context,
    url: UrlOption = None,
    key_file: KeyFileOption = None,
    ca_file: CaFileOption = None,
    fingerprint: FingerprintOption = None,
    insecure: InsecureOption = False,
    if_match: IfMatchOption = None,
) -> None:
    # Checked only when a command reaches the appliance: `balancer --url ... lab status`
    # needs no key.
    remote = RemoteOptions(url, key_file, ca_file, fingerprint, insecure) if url else None
    context.obj = Connection(remote, if_match)


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
    (users.app, "user"),
    (keys.app, "key"),
    (lab.app, "lab"),
):
    app.add_typer(group, name=name, no_args_is_help=True)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as error:
        # A fault of Balancer's own: one line here; its traceback in the log, if there is one
        # (`balancer serve` has balancer.log).
        if logging.getLogger().handlers:
            logging.getLogger("balancer").exception("unexpected error")
        typer.echo(f"error: {type(error).__name__}: {error}", err=True)
        sys.exit(1)
