"""Software Update (README, Software Update): check an offline update archive on this machine,
install it on the appliance (which restarts its management service into the new version), roll
back, and show the versions."""

from __future__ import annotations

import shutil
from importlib import metadata
from pathlib import Path
from typing import Annotated, Any

import typer

from balancer import update
from balancer.cli.answer import fail
from balancer.cli.appliance import DATA_DIR, DirOption, client, local_only

# Installing takes seconds with uv and a minute or more with pip on a slow machine; the
# appliance bounds its installer at 600 s.
INSTALL_WAIT = 660.0

app = typer.Typer(help="Software Update: check and install an update archive, roll back")

ArchiveArgument = Annotated[Path, typer.Argument(help="the update archive, balancer-VERSION.tar")]
ChecksumArgument = Annotated[
    Path | None,
    typer.Argument(help="its checksum file; default the archive's name with .sha256"),
]
DowngradeOption = Annotated[
    bool, typer.Option("--downgrade", help="accept a version older than the running one")
]


def _checksum_of(archive: Path, checksum: Path | None) -> str:
    checksum_file = checksum or archive.with_name(archive.name + ".sha256")
    try:
        return checksum_file.read_text(errors="replace")
    except OSError as error:
        fail(f"{error.filename}: {error.strerror}")


@app.command("check")
def update_check(
    ctx: typer.Context,
    archive: ArchiveArgument,
    checksum: ChecksumArgument = None,
    downgrade: DowngradeOption = False,
    data_dir: DirOption = DATA_DIR,
) -> None:
    """Check an archive's checksum, signature, files, version and the disk it needs."""
    local_only(ctx, "update check")
    checksum_text = _checksum_of(archive, checksum)
    try:
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


@app.command("install")
def update_install(
    ctx: typer.Context,
    archive: ArchiveArgument,
    checksum: ChecksumArgument = None,
    downgrade: DowngradeOption = False,
    data_dir: DirOption = DATA_DIR,
) -> None:
    """Send an archive to the appliance, which checks it, installs it beside the running
    version and restarts its management service into it; the engine keeps running."""
    checksum_text = _checksum_of(archive, checksum)
    try:
        data = archive.open("rb")  # streamed, not read whole: archives are up to 512 MB
    except OSError as error:
        fail(f"{error.filename}: {error.strerror}")
    with data, client(ctx, data_dir) as appliance:
        appliance.timeout = INSTALL_WAIT
        appliance.post("/software/archive", data, checksum=checksum_text.strip())
        done = appliance.post("/software/install", downgrade=str(downgrade).lower())
    typer.echo(
        f"Balancer {done['version']} installed (was {done['running']}); "
        "the management service is restarting into it"
    )


@app.command("rollback")
def update_rollback(ctx: typer.Context, data_dir: DirOption = DATA_DIR) -> None:
    """Return to the previous version: the management service restarts into it."""
    with client(ctx, data_dir) as appliance:
        done = appliance.post("/software/rollback")
    typer.echo(f"rolled back to Balancer {done['version']}; the management service is restarting")


@app.command("status")
def update_status(ctx: typer.Context, data_dir: DirOption = DATA_DIR) -> None:
    """The running and previous versions, an archive waiting, and the online check's answer."""
    with client(ctx, data_dir) as appliance:
        shown: dict[str, Any] = appliance.get("/software")
    typer.echo(f"running: {shown['running']}")
    typer.echo(f"previous: {shown['previous'] or 'none'}")
    offered = shown["offered"]
    if offered:
        older = " (a downgrade: install --downgrade)" if offered["downgrade"] else ""
        typer.echo(f"offered: {offered['version']}{older}")
    online = shown["online"]
    if not online["url"]:
        typer.echo("online update: off")
    elif online.get("available"):
        typer.echo(f"online update: Update {online['available']} is now available")
    elif online.get("error"):
        typer.echo(f"online update: {online['error']}")
    else:
        typer.echo(f"online update: {online['url']}, no newer version")
