"""How a command reaches the appliance, and how it answers the operator: errors are one line on
stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from balancer import defaults
from balancer.client import ApiError, Client, api_socket

DirOption = Annotated[
    Path,
    typer.Option("--dir", envvar="BALANCER_DIR", help="the appliance's data directory"),
]
DATA_DIR = Path(defaults.DATA_DIR)
JsonOption = Annotated[bool, typer.Option("--json", help="print the API's JSON")]


def fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@contextmanager
def client(data_dir: Path) -> Iterator[Client]:
    try:
        with Client(api_socket(data_dir)) as found:
            yield found
    except ApiError as error:
        fail(str(error))


def echo_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2))


def saved(reply: dict[str, Any]) -> None:
    tail = " (commit to apply)" if reply.get("pending", True) else ""
    typer.echo(f"saved as revision {reply['revision']}{tail}")
