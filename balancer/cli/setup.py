"""`balancer setup`: the first-run questions on the console (this node's hostname, where the
WebUI and the API listen, the password of the guide's ``loadbalancer`` user), then where the
WebUI is and its certificate's fingerprint. The first `balancer serve` on a terminal asks them
when nothing is set up yet.

Without a terminal the answers come from options or a file, for automated installs. The password
never comes from an option's value, which anyone on the machine reads in the process list (and
the shell keeps in its history): from a file, standard input, or the answers file."""

from __future__ import annotations

import getpass
import json
import re
import socket
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from balancer import certificates, defaults, first_start, users, validate
from balancer.cli.answer import fail
from balancer.cli.appliance import DATA_DIR, DirOption, local_only
from balancer.client import api_socket
from balancer.model import NodeSettings
from balancer.store import Store, StoreError

# What the questions and an answers file call each answer -> the node setting it is.
SETTINGS = {"hostname": "hostname", "listen": "listen_address", "port": "https_port"}
ANSWERS = (*SETTINGS, "password")
# Questions asked again after a refused answer, at most; then the setup stops, saving nothing.
ATTEMPTS = 5
EVERY_ADDRESS = ("all", "*", "any")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*$")


class Refused(Exception):
    """An answer that cannot be taken: one line naming it and why."""


def setup(
    ctx: typer.Context,
    data_dir: DirOption = DATA_DIR,
    hostname: Annotated[
        str | None, typer.Option(help="this node's name, in its certificate")
    ] = None,
    listen: Annotated[
        str | None,
        typer.Option(help="management address: the WebUI and API's; 'all': all of this machine's"),
    ] = None,
    port: Annotated[int | None, typer.Option(help="the management port (HTTPS, 9443)")] = None,
    answers: Annotated[
        Path | None,
        typer.Option(
            help="a file of answers: JSON, or key=value lines; hostname, listen, port, password"
        ),
    ] = None,
    password_file: Annotated[
        Path | None, typer.Option(help="read the password of loadbalancer from this file")
    ] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="read the password from standard input")
    ] = False,
) -> None:
    """Set up this node: hostname, management address and port, the loadbalancer password.

    On a terminal it asks what options and --answers leave out. Without one, what they leave out
    is kept as it is, except the password, which must be given: by --password-file,
    --password-stdin, or the answers file (keep that file to root: chmod 600)."""
    local_only(ctx, "setup")
    with socket.socket(socket.AF_UNIX) as probe:
        if probe.connect_ex(str(api_socket(data_dir))) == 0:
            fail("setup: balancer serve is running here; stop it first (balancer stop)")
    try:
        given = _read_answers(answers) if answers is not None else {}
        flags = {"hostname": hostname, "listen": listen, "port": port}
        given.update({k: v for k, v in flags.items() if v is not None})
        if password_file is not None:
            given["password"] = _first_line(password_file, "password_file")
        elif password_stdin:
            given["password"] = sys.stdin.readline().rstrip("\r\n")
        typer.echo(run(data_dir, given, terminal=sys.stdin.isatty()))
    except Refused as error:
        fail(str(error))
    except (KeyboardInterrupt, EOFError):
        fail("setup: stopped before the end; nothing was changed")


def first_run(data_dir: Path, given: dict[str, Any]) -> None:
    """What the first `balancer serve` on a terminal asks when nothing is set up yet; ``given``
    holds the answers its options gave. Where the WebUI is, it says itself once it listens."""
    with Store(first_start.prepare(data_dir)) as store:
        if first_start.set_up(store):
            return
    typer.echo("Nothing is set up yet: a few questions first (Ctrl-C stops).")
    try:
        typer.echo(run(data_dir, given, terminal=True, where=False))
    except Refused as error:
        fail(str(error))
    except (KeyboardInterrupt, EOFError):
        fail("setup: stopped before the end; nothing was changed")


def run(data_dir: Path, given: dict[str, Any], *, terminal: bool, where: bool = True) -> str:
    """Ask what ``given`` leaves out (on a ``terminal``), check it all, then keep it: nothing is
    kept unless every answer is taken. What to tell the operator, once: a password made for
    them, and (``where``) where the WebUI will be and its certificate's fingerprint."""
    with Store(first_start.prepare(data_dir)) as store:
        kept = store.node_settings()
        node = kept
        for answer, setting in SETTINGS.items():
            current = _said(answer, getattr(kept, setting))
            if answer in given:
                node = _with(node, answer, str(given[answer]))
            elif terminal:
                node = _ask(node, answer, current)
        made = None
        if "password" in given:
            password = str(given["password"])
            reason = first_start.weak(password)
            if reason is not None:
                raise Refused(f"password: {reason}")
        elif terminal:
            password = _ask_password()
        else:
            raise Refused(
                "password: give it with --password-file, --password-stdin or the answers file"
            )
        if not password:
            password = made = users.generate_password()
        user = getpass.getuser()
        try:
            if node != kept:
                store.save_node_settings(node, author=user)
            first_start.set_user_password(store, password, author=user)
        except (validate.Invalid, StoreError) as error:
            raise Refused(str(error)) from None
        pem = data_dir / "webui.pem"
        if node.hostname != kept.hostname and pem.exists():
            shown = certificates.describe(pem.read_bytes())
            if shown.self_signed and shown.names == (kept.hostname,):
                pem.unlink()  # the one made for the old name: made again for the new
        made_pem = first_start.certificate(data_dir, node.hostname)
        fingerprint = certificates.describe(made_pem.read_bytes()).fingerprint
    told = [f"{node.hostname} is set up; the password of {defaults.USER} is set."]
    if made is not None:
        told.append(first_start.announce(made))
    if where:
        heading = "Once `balancer serve` runs, the WebUI is at:"
        told.append(first_start.ready(node, fingerprint, heading))
    return "\n".join(told)


def _with(node: NodeSettings, answer: str, text: str) -> NodeSettings:
    """``node`` with one answer taken, or Refused naming it and why."""
    text = text.strip()
    if answer == "hostname" and not _HOSTNAME.match(text):
        raise Refused(
            "hostname: must be letters, digits and '-', in labels joined by '.', "
            "at most 253 characters"
        )
    value: Any = None if answer == "listen" and text.lower() in EVERY_ADDRESS else text
    try:
        return validate.parse_as(NodeSettings, {**node.model_dump(), SETTINGS[answer]: value})
    except validate.Invalid as error:
        reasons = "; ".join(problem.reason for problem in error.problems)
        raise Refused(f"{answer}: {reasons}") from None


def _ask(node: NodeSettings, answer: str, current: str) -> NodeSettings:
    question = {
        "hostname": "This node's hostname",
        "listen": "Management address: the WebUI and API listen on it ('all': every address)",
        "port": "Management port (HTTPS)",
    }[answer]
    for _ in range(ATTEMPTS):
        typed = input(f"{question} [{current}]: ").strip() or current
        try:
            return _with(node, answer, typed)
        except Refused as error:
            typer.echo(f"  not taken: {error}")
    raise Refused(f"{answer}: no answer taken after {ATTEMPTS} tries; nothing was changed")


def _ask_password() -> str:
    """The password typed twice, unseen, and strong enough; empty: one is made."""
    for _ in range(ATTEMPTS):
        first = getpass.getpass(f"Password for {defaults.USER} (empty: make one): ")
        if not first:
            return ""
        reason = first_start.weak(first)
        if reason is not None:
            typer.echo(f"  not taken: password: {reason}")
        elif getpass.getpass("Again: ") != first:
            typer.echo("  not taken: password: the two differ")
        else:
            return first
    raise Refused(f"password: none taken after {ATTEMPTS} tries; nothing was changed")


def _said(answer: str, value: object) -> str:
    return "all" if answer == "listen" and value is None else str(value)


def _read_answers(path: Path) -> dict[str, Any]:
    """An answers file: a JSON object, or ``key=value`` lines (``#`` comments)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise Refused(f"answers: cannot read {path}: {error}") from None
    found: dict[str, Any] = {}
    if text.lstrip().startswith("{"):
        try:
            found = json.loads(text)
        except json.JSONDecodeError as error:
            raise Refused(f"answers: {path} is not JSON: {error}") from None
        if not isinstance(found, dict):
            raise Refused(f"answers: {path} is not a JSON object")
    else:
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip() and not line.lstrip().startswith("#"):
                key, equals, value = line.partition("=")
                if not equals:
                    raise Refused(f"answers: line {number} of {path} is not key=value")
                found[key.strip()] = value.strip()
    unknown = sorted(set(found) - set(ANSWERS))
    if unknown:
        raise Refused(f"answers: unknown {unknown[0]!r}; the answers are {', '.join(ANSWERS)}")
    return found


def _first_line(path: Path, field: str) -> str:
    try:
        with path.open(encoding="utf-8") as file:
            return file.readline().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as error:
        raise Refused(f"{field}: cannot read {path}: {error}") from None
