"""A new password, asked for at a prompt or read from standard input: never an argument, which
anyone on the machine could read in the process list."""

from __future__ import annotations

import getpass
import sys
from typing import Annotated

import typer

from balancer.cli.answer import fail

PasswordStdin = Annotated[
    bool, typer.Option("--password-stdin", help="read the password from standard input")
]


def new_password(user: str, from_stdin: bool) -> str | None:
    """The password the operator gives for ``user``, or None to have one made."""
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if not sys.stdin.isatty():
        return None
    first = getpass.getpass(f"Password for {user} (empty: make one): ")
    if first and getpass.getpass("Again: ") != first:
        fail("password: the two differ")
    return first or None
