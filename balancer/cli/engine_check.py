"""``balancer engine-check``: keepalived's check of this node's engine, by hand."""

from __future__ import annotations

import typer

from balancer.cli.appliance import DATA_DIR, DirOption
from balancer.ha.engine_check import verdict


def engine_check(data_dir: DirOption = DATA_DIR) -> None:
    """Exit 0 if this node's engine answers and runs a revision, else 1 saying why. It asks
    the engine, not the management daemon, which need not run (keepalived runs the same check
    as `python -m balancer.ha.engine_check --dir DIR`)."""
    raise typer.Exit(verdict(data_dir))
