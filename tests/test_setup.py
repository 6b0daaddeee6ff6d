"""First-run setup (issue 15 item 6): `balancer setup` asks on a terminal, typed into a
pseudo-terminal here as an operator types at the console; the first `balancer serve` on a
terminal asks the same when nothing is set up; without a terminal the answers come from options
or a file. A weak password is refused with its reason; the password is never echoed, never in
a log, and never an option's value."""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pexpect  # type: ignore[import-untyped]
import pytest

from balancer import certificates, first_start, users
from balancer.store import Store
from tests.appliance import WEBUI_HOST, free_port, kill_engine, shut_down

STRONG = "Plain-Tulip-Ladder-58"


def spawn(*args: str) -> tuple[pexpect.spawn, io.StringIO]:
    """`balancer ARGS` on a pseudo-terminal of its own; everything it shows, in a transcript."""
    child = pexpect.spawn(
        sys.executable,
        ["-m", "balancer", *args],
        encoding="utf-8",
        timeout=60,
        env={**os.environ, "TERM": "dumb"},
        dimensions=(50, 200),  # no wrapped lines to match across
    )
    transcript = io.StringIO()
    child.logfile_read = transcript
    return child, transcript


def fingerprint_of(pem: Path) -> str:
    """As openssl shows it, which the operator compares with the browser's."""
    shown = subprocess.run(
        ["openssl", "x509", "-noout", "-fingerprint", "-sha256", "-in", str(pem)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return shown.stdout.strip()


def test_setup_asks_on_the_console_and_refuses_weak_passwords_saying_why(tmp_path: Path) -> None:
    data_dir, port = tmp_path / "appliance", free_port([WEBUI_HOST])
    child, transcript = spawn("setup", "--dir", str(data_dir))
    child.expect_exact(f"This node's hostname [{socket.gethostname()}]: ")
    child.sendline("lb 1")
    child.expect_exact("not taken: hostname: must be letters, digits and '-'")
    child.expect_exact("This node's hostname")
    child.sendline("lb1.example.com")
    child.expect_exact("('all': every address) [all]: ")
    child.sendline("127.0.0.1")
    child.expect_exact("Management port (HTTPS) [9443]: ")
    child.sendline("http")
    child.expect_exact("not taken: port: 'http' is not a whole number")
    child.sendline(str(port))
    for weak, reason in (
        ("loadbalancer", "contains the user's name, loadbalancer"),
        ("Password2024!", "is a common password (password, with digits or signs around it)"),
        ("short-1", "must be at least 12 characters long"),
    ):
        child.expect_exact("Password for loadbalancer (empty: make one): ")
        child.sendline(weak)
        child.expect_exact(f"not taken: password: {reason}")
    child.expect_exact("Password for loadbalancer (empty: make one): ")
    child.sendline(STRONG)
    child.expect_exact("Again: ")
    child.sendline(STRONG + "!")
    child.expect_exact("not taken: password: the two differ")
    child.expect_exact("Password for loadbalancer (empty: make one): ")
    child.sendline(STRONG)
    child.expect_exact("Again: ")
    child.sendline(STRONG)
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, transcript.getvalue()
    told = transcript.getvalue().replace("\r\n", "\n")
    assert "lb1.example.com is set up; the password of loadbalancer is set.\n" in told
    assert f"WebUI is at:\n  https://127.0.0.1:{port}/lbadmin/\n" in told
    pem = data_dir / "webui.pem"
    assert f"\n  {fingerprint_of(pem)}\n" in told
    assert certificates.describe(pem.read_bytes()).names == ("lb1.example.com",)
    assert STRONG not in told, "typed unseen, never shown"
    with Store(data_dir / "balancer.db") as store:
        node = store.node_settings()
        assert (node.hostname, str(node.listen_address), node.https_port) == (
            "lb1.example.com",
            "127.0.0.1",
            port,
        )
        assert users.verify(store, "loadbalancer", STRONG) is not None


def test_the_first_serve_on_a_terminal_asks_then_serves_and_never_logs_the_password(
    tmp_path: Path,
) -> None:
    data_dir, port = tmp_path / "appliance", free_port([WEBUI_HOST])
    serve = ("serve", "--dir", str(data_dir), "--listen", WEBUI_HOST, "--https-port", str(port))
    child, transcript = spawn(*serve)
    try:
        child.expect_exact("Nothing is set up yet")
        child.expect_exact(f"This node's hostname [{socket.gethostname()}]: ")
        child.sendline("")  # the default; the address and port were given as options
        child.expect_exact("Password for loadbalancer (empty: make one): ")
        child.sendline("Password-2026")
        child.expect_exact("not taken: password: is a common password (password, ")
        child.expect_exact("Password for loadbalancer (empty: make one): ")
        child.sendline("")  # made, and shown this once
        child.expect(r"has the password\s+(\S+)\s+It is shown only this once")
        made = child.match.group(1)
        child.expect_exact("Balancer is ready. The WebUI is at:")
        child.expect(r"sha256 Fingerprint=[0-9A-F:]{95}")
        assert child.after == fingerprint_of(data_dir / "webui.pem")
        # Signed in with it, through the WebUI's form.
        with httpx.Client(base_url=f"https://{WEBUI_HOST}:{port}", verify=False) as web:
            token = csrf_of(web.get("/lbadmin/sign-in").text)
            signed = web.post(
                "/lbadmin/sign-in",
                data={"username": "loadbalancer", "password": made, "csrf_token": token},
            )
            assert signed.status_code == 303, signed.text
        running = subprocess.run(
            [sys.executable, "-m", "balancer", "setup", "--dir", str(data_dir)],
            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert running.stderr == (
            "error: setup: balancer serve is running here; stop it first (balancer stop)\n"
        )
    finally:
        shut_down(data_dir)
        with contextlib.suppress(pexpect.TIMEOUT):
            child.expect(pexpect.EOF, timeout=30)
        child.close(force=True)
        kill_engine(data_dir)
    assert transcript.getvalue().count(made) == 1, "shown once"
    logged = [path for path in data_dir.rglob("*") if path.is_file()]
    assert data_dir / "logs" / "balancer.log" in logged
    assert [path for path in logged if made.encode() in path.read_bytes()] == []


def csrf_of(page: str) -> str:
    start = page.index('name="csrf_token" value="') + len('name="csrf_token" value="')
    return page[start : page.index('"', start)]


def setup(data_dir: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """`balancer setup` with no terminal, as an automated install runs it."""
    return subprocess.run(
        [sys.executable, "-m", "balancer", "setup", "--dir", str(data_dir), *args],
        input=stdin, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_setup_without_a_terminal_takes_options_and_an_answers_file(tmp_path: Path) -> None:
    data_dir, port = tmp_path / "appliance", free_port([WEBUI_HOST])
    weak = setup(data_dir, "--hostname", "lb1", "--password-stdin", stdin="loadbalancer1\n")
    assert (weak.returncode, weak.stderr) == (
        1,
        "error: password: contains the user's name, loadbalancer\n",
    )
    unsaid = setup(data_dir, "--hostname", "lb1")
    assert unsaid.stderr == (
        "error: password: give it with --password-file, --password-stdin or the answers file\n"
    )
    # Never as an option's value, which anyone on the machine sees in ps.
    assert setup(data_dir, "--password", STRONG).returncode == 2
    with Store(first_start.prepare(data_dir)) as store:
        assert store.users() == [], "nothing kept from a refused setup"

    answers = tmp_path / "answers"
    answers.write_text(f"# an install's answers\nhostname = lb2\nlisten=127.0.0.1\nport={port}\n")
    password = tmp_path / "password"
    password.write_text(STRONG + "\n")
    done = setup(data_dir, "--answers", str(answers), "--password-file", str(password))
    assert done.returncode == 0, done.stderr
    assert f"https://127.0.0.1:{port}/lbadmin/\n" in done.stdout
    assert f"\n  {fingerprint_of(data_dir / 'webui.pem')}\n" in done.stdout

    # JSON, the password in it; an option wins over the file; a new name, a new certificate.
    answers.write_text(json.dumps({"hostname": "lb3", "password": "Another-Strong-Pass-7"}))
    again = setup(data_dir, "--answers", str(answers), "--listen", "all")
    assert again.returncode == 0, again.stderr
    assert "(it listens on every address of this machine: use one of them)" in again.stdout
    assert certificates.describe((data_dir / "webui.pem").read_bytes()).names == ("lb3",)
    with Store(data_dir / "balancer.db") as store:
        node = store.node_settings()
        assert (node.hostname, node.listen_address, node.https_port) == ("lb3", None, port)
        assert users.verify(store, "loadbalancer", "Another-Strong-Pass-7") is not None

    answers.write_text(json.dumps({"hostname": "lb4", "pasword": "typo"}))
    typo = setup(data_dir, "--answers", str(answers))
    assert typo.stderr == (
        "error: answers: unknown 'pasword'; the answers are hostname, listen, port, password\n"
    )
    assert not [p for p in data_dir.rglob("*") if p.is_file() and STRONG.encode() in p.read_bytes()]


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("", "must be at least 12 characters long"),
        ("LoadBalancer-2024", "contains the user's name, loadbalancer"),
        ("changeme12345", "is a common password (changeme, with digits or signs around it)"),
        ("!!admin!!2024", "is a common password (admin, with digits or signs around it)"),
        ("121212121212", "has fewer than 5 different characters"),
        ("1234567890123", "is a run of keys on the keyboard or of the alphabet"),
        ("poiuytrewqpo", "is a run of keys on the keyboard or of the alphabet"),
        ("correct horse battery", None),
        # A fixed id: pytest-xdist's workers must collect the same names, and this password
        # differs in each.
        pytest.param(users.generate_password(), None, id="a-made-password"),
    ],
)
def test_a_weak_first_password_is_refused_with_its_reason(
    password: str, reason: str | None
) -> None:
    assert first_start.weak(password) == reason
