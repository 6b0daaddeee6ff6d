"""Support: the support download, one archive of the configuration, logs, versions and system
facts, every secret redacted (README, Support)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from balancer.cli.answer import fail
from balancer.cli.appliance import DATA_DIR, DirOption, client

app = typer.Typer(help="Support: the support download")


@app.command("archive")
def support_archive(
    ctx: typer.Context,
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", help="file; default balancer-support-TIME.tar.gz here"),
    ] = None,
    data_dir: DirOption = DATA_DIR,
) -> None:
    """Download the support archive (tar.gz), every secret in it redacted."""
    with client(ctx, data_dir) as appliance:
        data = appliance.get("/support/archive")
    if not isinstance(data, bytes):
        fail("the appliance did not answer with an archive")
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    path = output or Path(f"balancer-support-{stamp}.tar.gz")
    try:
        path.write_bytes(data)
    except OSError as error:
        fail(f"--output: cannot write {path}: {error.strerror}")
    typer.echo(f"support archive written to {path} ({len(data)} bytes)")
