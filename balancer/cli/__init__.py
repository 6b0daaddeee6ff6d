"""The ``balancer`` command: a client of the appliance's API, one command per thing the guide
has the operator do. Errors are one line on stderr and a non-zero exit."""

from __future__ import annotations

import importlib
import sys

import typer
from typer._click import Command, Context
from typer._click import exceptions as usage  # typer 0.29 carries its own click
from typer.core import TyperGroup
from typer.main import get_command, get_group

from balancer.cli.appliance import Connection, IfMatchOption
from balancer.cli.remote import (
    CaFileOption,
    FingerprintOption,
    InsecureOption,
    KeyFileOption,
    RemoteOptions,
    UrlOption,
)

# Name -> the module of balancer.cli that holds it, and the command there: a function, or a
# Typer of its own for a group of commands. In the order `balancer --help` lists them. Each
# module is imported when its command runs, not before: a command starts a Python of its own,
# and importing every command's module (and what those import) took longer than a whole
# command may (README, Performance).
COMMANDS = {
    "setup": ("setup", "setup"),
    "init": ("serve", "init"),
    "serve": ("serve", "serve"),
    "stop": ("serve", "stop"),
    "service-unit": ("service", "service_unit"),
    "status": ("status", "status"),
    "changes": ("status", "changes"),
    "commit": ("status", "commit"),
    "logs": ("status", "logs"),
    "audit": ("audit", "app"),
    "demo": ("serve", "demo"),
    "vip": ("vip", "app"),
    "rip": ("rip", "app"),
    "config": ("config", "app"),
    "psm": ("psm", "app"),
    "persistence": ("persistence", "app"),
    "user": ("users", "app"),
    "key": ("keys", "app"),
    "lockdown": ("lockdown", "app"),
    "lab": ("lab", "app"),
    "ha": ("ha", "app"),
    "alerts": ("alerts", "app"),
    "directory": ("directory", "app"),
    "support": ("support", "app"),
    "update": ("update", "app"),
    "engine-check": ("engine_check", "engine_check"),
}


class Commands(TyperGroup):
    """The top-level commands, each made from its module when it is asked for."""

    def list_commands(self, ctx: Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: Context, cmd_name: str) -> Command | None:
        if cmd_name not in COMMANDS:
            return None
        if cmd_name not in self.commands:
            module, name = COMMANDS[cmd_name]
            found = getattr(importlib.import_module(f"balancer.cli.{module}"), name)
            command: Command
            if isinstance(found, typer.Typer):
                group = get_group(found)
                group.no_args_is_help = True
                command = group
            else:
                single = typer.Typer(add_completion=False)
                single.command()(found)
                command = get_command(single)
            command.name = cmd_name
            self.commands[cmd_name] = command
        return self.commands[cmd_name]


app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False, cls=Commands)


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


def main() -> None:
    try:
        # Not standalone: typer would print a usage error as a box of several lines.
        code = app(standalone_mode=False)
    except usage.NoArgsIsHelpError as error:
        error.show()
        sys.exit(error.exit_code)
    except usage.ClickException as error:
        message = error.format_message()
        missing = isinstance(error, usage.MissingParameter)
        if isinstance(error, usage.BadParameter) and not missing and error.param is not None:
            # "--https-port: Input should be a valid integer", not "Invalid value for ..."
            named = error.param.get_error_hint().replace("'", "")
            message = f"{named}: {error.message}"
        typer.echo(f"error: {message}", err=True)
        sys.exit(error.exit_code)
    except typer.Abort:
        typer.echo("error: aborted", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as error:
        import logging  # here only: ~15 ms of every command's start

        # A fault of Balancer's own: one line here; its traceback in the log, if there is one
        # (`balancer serve` has balancer.log).
        if logging.getLogger().handlers:
            logging.getLogger("balancer").exception("unexpected error")
        typer.echo(f"error: {type(error).__name__}: {error}", err=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
