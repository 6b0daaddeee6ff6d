"""Users of the WebUI and the API: the guide's Maintenance > Passwords."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from balancer.cli.answer import JsonOption, echo_json, moment
from balancer.cli.appliance import DATA_DIR, DirOption, client
from balancer.cli.password import PasswordStdin, new_password
from balancer.roles import Role

app = typer.Typer(help="Users of the WebUI and the API: Maintenance > Passwords")


@app.command("list")
def user_list(
    ctx: typer.Context, data_dir: DirOption = DATA_DIR, as_json: JsonOption = False
) -> None:
    """List the users, each one's role, and when each one's password was set."""
    with client(ctx, data_dir) as appliance:
        found = appliance.get("/users")
    if as_json:
        echo_json(found)
        return
    for user in found:
        typer.echo(
            f"{user['name']:32} {user['role']:13} added {moment(user['created'])}  "
            f"password set {moment(user['changed'])}"
        )


def _password(name: str, from_stdin: bool) -> tuple[str, bool]:
    """The password to send, and whether it was made here (and so must be shown)."""
    from balancer.users import generate_password

    given = new_password(name, from_stdin)
    return (given, False) if given is not None else (generate_password(name), True)


def _shown_once(name: str, password: str) -> None:
    typer.echo(
        f"The password of {name} is\n\n    {password}\n\n"
        "It is shown only this once; only its hash is kept."
    )


@app.command("add")
def user_add(
    ctx: typer.Context,
    name: str,
    password_stdin: PasswordStdin = False,
    role: Annotated[Role, typer.Option(help="what the user may do")] = Role.ADMINISTRATOR,
    data_dir: DirOption = DATA_DIR,
) -> None:
    """Add a user; the password is asked for (empty: one is made and shown once)."""
    password, made = _password(name, password_stdin)
    body: dict[str, Any] = {"name": name, "password": password, "role": role}
    with client(ctx, data_dir) as appliance:
        appliance.post("/users", body)
    _shown_once(name, password) if made else typer.echo(f"user {name} added")


@app.command("passwd")
def user_passwd(
    ctx: typer.Context,
    name: str,
    password_stdin: PasswordStdin = False,
    data_dir: DirOption = DATA_DIR,
) -> None:
    """Set a user's password; their WebUI sessions end at once."""
    password, made = _password(name, password_stdin)
    with client(ctx, data_dir) as appliance:
        appliance.put(f"/users/{name}/password", {"password": password})
    _shown_once(name, password) if made else typer.echo(f"password of {name} set")


@app.command("set-role")
def user_set_role(
    ctx: typer.Context, name: str, role: Role, data_dir: DirOption = DATA_DIR
) -> None:
    """Change a user's role: at once, for their WebUI sessions and API keys too."""
    with client(ctx, data_dir) as appliance:
        appliance.put(f"/users/{name}/role", {"role": role})
    typer.echo(f"{name} has the role {role}")


@app.command("remove")
def user_remove(ctx: typer.Context, name: str, data_dir: DirOption = DATA_DIR) -> None:
    """Remove a user and revoke their API keys; the last user cannot be removed."""
    with client(ctx, data_dir) as appliance:
        appliance.delete(f"/users/{name}")
    typer.echo(f"user {name} removed; their API keys are revoked")


@app.command("reset-two-factor")
def user_reset_two_factor(ctx: typer.Context, name: str, data_dir: DirOption = DATA_DIR) -> None:
    """Reset a user's second factor (a lost phone and its recovery codes): they sign in with
    the password alone, or enrol again if their role must have one."""
    with client(ctx, data_dir) as appliance:
        appliance.delete(f"/users/{name}/two-factor")
    typer.echo(f"the second factor of {name} is reset")


@app.command("two-factor-required")
def user_two_factor_required(
    ctx: typer.Context,
    roles: Annotated[list[Role] | None, typer.Argument(help="the roles; none: show them")] = None,
    none: Annotated[bool, typer.Option("--none", help="no role must have one")] = False,
    data_dir: DirOption = DATA_DIR,
) -> None:
    """Which roles must sign in with a second factor; with roles (or --none), set them. A user
    of such a role without one enrols right after the password, before anything else."""
    with client(ctx, data_dir) as appliance:
        if roles or none:
            found = appliance.put("/two-factor", {"required": [] if none else roles})
        else:
            found = appliance.get("/two-factor")
    typer.echo("must have a second factor: " + (", ".join(found["required"]) or "no role"))
