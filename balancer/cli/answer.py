"""How a command answers the operator: errors are one line on stderr and a non-zero exit, never
a traceback; --json prints the API's own document."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any, NoReturn

import typer

JsonOption = Annotated[bool, typer.Option("--json", help="print the API's JSON")]


def fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def echo_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2))


def moment(seconds: float) -> str:
    """A time the appliance gives (seconds since the epoch) as this machine's local time."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


def saved(reply: dict[str, Any]) -> None:
    tail = " (commit to apply)" if reply.get("pending", True) else ""
    typer.echo(f"saved as revision {reply['revision']}{tail}")
