"""How a command reaches the appliance: this machine's, through the Unix socket in its data
directory, or one elsewhere over HTTPS (``balancer --url``). Every command goes the same way."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from balancer import defaults
from balancer.cli.answer import fail
from balancer.cli.remote import RemoteOptions
from balancer.client import ApiError, Client, api_socket

DirOption = Annotated[
    Path,
    typer.Option("--dir", envvar="BALANCER_DIR", help="the appliance's data directory"),
]
DATA_DIR = Path(defaults.DATA_DIR)
IfMatchOption = Annotated[
    int | None,
    typer.Option(
        "--if-match",
        metavar="REVISION",
        help="change only if REVISION is still the newest saved one, else refuse",
    ),
]


@dataclass(frozen=True)
class Connection:
    """What the options before the command say about reaching the appliance."""

    remote: RemoteOptions | None = None
    base: int | None = None


def _connection(ctx: typer.Context) -> Connection:
    found = ctx.find_root().obj
    return found if isinstance(found, Connection) else Connection()


@contextmanager
def client(ctx: typer.Context, data_dir: Path) -> Iterator[Client]:
    """The appliance the options before the command name (``ctx``), else this machine's."""
    connection = _connection(ctx)
    where = connection.remote.remote() if connection.remote else api_socket(data_dir)
    try:
        with Client(where, base=connection.base) as found:
            yield found
    except ApiError as error:
        fail(str(error))


def local_only(ctx: typer.Context, command: str) -> None:
    """Refuse, before doing anything, a command that acts on this machine when --url is given."""
    remote = _connection(ctx).remote
    if remote is not None:
        fail(f"{command} acts on this machine only, not on the appliance at {remote.url}", 2)
