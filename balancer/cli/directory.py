"""Directory sign-in (LDAP, LDAPS, StartTLS, Active Directory, RADIUS): show, set, test, off."""

from __future__ import annotations

import getpass
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from balancer.cli.answer import JsonOption, echo_json, fail
from balancer.cli.appliance import DATA_DIR, DirOption, client

app = typer.Typer(help="Directory sign-in: LDAP, Active Directory or RADIUS users, by group")

# What `show` prints, in this order; the rest (the CA's PEM) is said in short.
SHOWN = (
    "kind",
    "servers",
    "timeout",
    "base_dn",
    "bind_dn",
    "user_filter",
    "domain",
    "nested_groups",
    "member_attribute",
    "role_attribute",
    "default_role",
)


@app.command("show")
def directory_show(
    ctx: typer.Context, data_dir: DirOption = DATA_DIR, as_json: JsonOption = False
) -> None:
    """The settings; the secret shows only as "set"."""
    with client(ctx, data_dir) as appliance:
        found = appliance.get("/directory")
    if as_json:
        echo_json(found)
        return
    if not found["enabled"]:
        typer.echo("directory sign-in is off: only local users sign in")
        return
    for field in SHOWN:
        value = found[field]
        if value in (None, "", []) and field not in ("kind", "servers"):
            continue
        typer.echo(f"{field:17} {', '.join(value) if isinstance(value, list) else value}")
    typer.echo(f"{'ca_certificate':17} {'set' if found['ca_certificate'] else 'none (system CAs)'}")
    typer.echo(f"{'secret':17} {found['secret'] or 'none'}")
    for mapping in found["roles"]:
        typer.echo(f"{'role':17} {mapping['group']} -> {mapping['role']}")


@app.command("set")
def directory_set(
    ctx: typer.Context,
    kind: Annotated[str | None, typer.Option(help="ldap, ldaps, starttls or radius")] = None,
    server: Annotated[
        list[str] | None, typer.Option(help="host or host:port, tried in order (repeat)")
    ] = None,
    base_dn: Annotated[str | None, typer.Option(help="LDAP: where users and groups are")] = None,
    bind_dn: Annotated[str | None, typer.Option(help="LDAP: the search account's DN")] = None,
    user_filter: Annotated[
        str | None, typer.Option(help="LDAP: with {user}, {upn} or {name}")
    ] = None,
    domain: Annotated[
        str | None, typer.Option(help="Active Directory's DNS domain, for user@domain")
    ] = None,
    nested_groups: Annotated[
        str | None, typer.Option(help="active_directory, walk or none")
    ] = None,
    member_attribute: Annotated[
        str | None, typer.Option(help="LDAP: a group's member attribute (member)")
    ] = None,
    ca_file: Annotated[
        Path | None, typer.Option(help="a PEM file: the CA that issued the servers' certificates")
    ] = None,
    role_attribute: Annotated[str | None, typer.Option(help="RADIUS: Filter-Id or Class")] = None,
    role: Annotated[
        list[str] | None,
        typer.Option(help="GROUP=ROLE: members of GROUP (a DN, a cn, a RADIUS value) (repeat)"),
    ] = None,
    default_role: Annotated[
        str | None, typer.Option(help="the role of a user in no mapped group; none: refused")
    ] = None,
    timeout: Annotated[float | None, typer.Option(help="seconds per server")] = None,
    secret_stdin: Annotated[
        bool,
        typer.Option(
            "--secret-stdin",
            help="read the search account's password or RADIUS's shared secret from stdin",
        ),
    ] = False,
    data_dir: DirOption = DATA_DIR,
) -> None:
    """Set directory sign-in up, or change the settings given (the others are kept). The
    secret is asked for on a terminal, or read with --secret-stdin: never an option, which
    others could see in ps; left empty, the saved one is kept."""
    given: dict[str, Any] = {
        "kind": kind,
        "servers": server,
        "base_dn": base_dn,
        "bind_dn": bind_dn,
        "user_filter": user_filter,
        "domain": domain,
        "nested_groups": nested_groups,
        "member_attribute": member_attribute,
        "role_attribute": role_attribute,
        "timeout": timeout,
    }
    changes = {k: v for k, v in given.items() if v is not None}
    if ca_file is not None:
        try:
            changes["ca_certificate"] = ca_file.read_text()
        except (OSError, UnicodeDecodeError) as error:
            fail(f"--ca-file: cannot read {ca_file}: {error}")
    if role is not None:
        changes["roles"] = [_mapping(text) for text in role]
    if default_role is not None:
        changes["default_role"] = None if default_role == "none" else default_role
    with client(ctx, data_dir) as appliance:
        found = appliance.get("/directory")
        body = {k: v for k, v in found.items() if k not in ("enabled", "secret")}
        body.update(changes)
        if secret_stdin:
            body["secret"] = sys.stdin.readline().rstrip("\r\n")
        elif sys.stdin.isatty():
            body["secret"] = getpass.getpass(
                "Secret (search account's password or RADIUS's shared secret; empty: keep): "
            )
        saved = appliance.put("/directory", body)
    typer.echo(f"directory sign-in set: {saved['kind']} {', '.join(saved['servers'])}")


@app.command("test")
def directory_test(
    ctx: typer.Context,
    name: Annotated[
        str, typer.Argument(help="a directory user's name; empty: only reach and bind")
    ] = "",
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="read the user's password from stdin")
    ] = False,
    data_dir: DirOption = DATA_DIR,
    as_json: JsonOption = False,
) -> None:
    """Sign NAME in as a test: one line saying what works, or exactly what failed (exit 1)."""
    password = ""
    if name and password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif name and sys.stdin.isatty():
        password = getpass.getpass(f"{name}'s password: ")
    with client(ctx, data_dir) as appliance:
        verdict = appliance.post("/directory/test", {"name": name, "password": password})
    if as_json:
        echo_json(verdict)
    elif verdict["ok"]:
        typer.echo(verdict["said"])
    if not verdict["ok"]:
        fail(f"{verdict['reason']}: {verdict['said']}")


@app.command("off")
def directory_off(ctx: typer.Context, data_dir: DirOption = DATA_DIR) -> None:
    """Turn directory sign-in off: only local users sign in."""
    with client(ctx, data_dir) as appliance:
        appliance.delete("/directory")
    typer.echo("directory sign-in is off")


def _mapping(text: str) -> dict[str, str]:
    group, equals, role = text.rpartition("=")
    if not equals or not group:
        fail(f"--role: {text!r} is not GROUP=ROLE")
    return {"group": group, "role": role}
