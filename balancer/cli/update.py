"""Software Update: the check of an offline update archive against this machine's Balancer
(README, Software Update)."""

from __future__ import annotations

import shutil
from importlib import metadata
from pathlib import Path
from typing import Annotated

import typer

from balancer import update
from balancer.cli.answer import fail
from balancer.cli.appliance import DATA_DIR, DirOption, local_only

app = typer.Typer(help="Software Update: check an offline update archive")


@app.command("check")
def update_check(
    ctx: typer.Context,
    archive: Annotated[Path, typer.Argument(help="the update archive, balancer-VERSION.tar")],
    checksum: Annotated[
        Path | None,
        typer.Argument(help="its checksum file; default the archive's name with .sha256"),
    ] = None,
    downgrade: Annotated[
        bool, typer.Option("--downgrade", help="accept a version older than the running one")
    ] = False,
    data_dir: DirOption = DATA_DIR,
) -> None:
    """Check an archive's checksum, signature, files, version and the disk it needs."""
    local_only(ctx, "update check")
    checksum_file = checksum or archive.with_name(archive.name + ".sha256")
    try:
        checksum_text = checksum_file.read_text(errors="replace")
        free = shutil.disk_usage(data_dir if data_dir.exists() else Path.cwd()).free
        verdict = update.check(
            archive,
            checksum_text,
            public_key=update.release_public_key(),
            running=metadata.version("balancer"),
            free_bytes=free,
            allow_downgrade=downgrade,
        )
    except update.Refused as refused:
        fail(f"refused: {refused}")
    except OSError as error:
        fail(f"{error.filename}: {error.strerror}")
    older = " (a downgrade, confirmed)" if verdict.downgrade else ""
    typer.echo(
        f"{archive.name}: Balancer {verdict.version} may replace {verdict.running}{older}; "
        f"{len(verdict.files)} files, {verdict.size} bytes, each as the signed manifest says"
    )
