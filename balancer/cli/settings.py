"""Settings given on the command line: named options, and any other as --set name=value."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from balancer.cli.answer import fail

Sets = Annotated[
    list[str] | None,
    typer.Option("--set", help="any setting as dotted.name=value, e.g. health_check.rise=3"),
]


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def settings(sets: list[str] | None, **known: Any) -> dict[str, Any]:
    """Options given on the command line, plus --set name=value, as a nested document."""
    body: dict[str, Any] = {key: value for key, value in known.items() if value is not None}
    for item in sets or []:
        name, sep, text = item.partition("=")
        if not sep or not name:
            fail(f"--set {item!r}: expected name=value", 2)
        *parents, leaf = name.split(".")
        node = body
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = _value(text)
    return body
