"""The `balancer` command's users and API keys, on a real appliance: what the command sets is
what signing in to the WebUI over HTTPS then takes."""

from __future__ import annotations

import getpass
import os
import re
import ssl
import subprocess
import sys
import threading
from pathlib import Path

import httpx

from balancer.client import Client, api_socket
from tests.appliance import (
    WEBUI_HOST,
    Appliance,
    appliance,
    free_port,
    kill_engine,
    wait_for,
)


def balancer(
    box: Appliance, *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """The command as an operator runs it; ``stdin`` None is a standard input that is no
    terminal and holds nothing, as under cron."""
    # A key or URL in the test runner's own environment must not leak into the command.
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BALANCER_")}
    return subprocess.run(
        [sys.executable, "-m", "balancer", *args],
        env={**clean, "BALANCER_DIR": str(box.data_dir), **(env or {})},
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def signs_in(box: Appliance, user: str, password: str) -> bool:
    """Whether the WebUI's sign-in form over HTTPS takes ``user`` and ``password``."""
    with httpx.Client(base_url=box.webui, verify=False, timeout=10) as browser:
        page = browser.get("sign-in")
        token = re.search(r'name="csrf_token" value="(\w+)"', page.text)
        assert token is not None, page.text
        answer = browser.post(
            "sign-in", data={"username": user, "password": password, "csrf_token": token[1]}
        )
    assert answer.status_code in (303, 401), answer.text
    return answer.status_code == 303


def test_users_added_changed_and_removed_with_the_command_sign_in_over_https(
    tmp_path: Path,
) -> None:
    with appliance(tmp_path) as box:
        added = balancer(
            box, "user", "add", "operator", "--password-stdin", stdin="the first one here\n"
        )
        assert (added.returncode, added.stdout, added.stderr) == (0, "user operator added\n", "")
        assert re.search(
            r"^operator +administrator +added ", balancer(box, "user", "list").stdout, re.M
        )
        assert signs_in(box, "operator", "the first one here")

        changed = balancer(
            box, "user", "passwd", "operator", "--password-stdin", stdin="the second one 2222\n"
        )
        assert changed.stdout == "password of operator set\n", changed.stderr
        assert not signs_in(box, "operator", "the first one here")
        assert signs_in(box, "operator", "the second one 2222")

        # No terminal and no --password-stdin: a password is made and shown, this once.
        made = balancer(box, "user", "passwd", "operator")
        shown = re.search(r"The password of operator is\n\n    (\S+)\n", made.stdout)
        assert shown is not None, made.stdout
        assert signs_in(box, "operator", shown[1])

        removed = balancer(box, "user", "remove", "operator")
        assert removed.stdout == "user operator removed; their API keys are revoked\n"
        assert not signs_in(box, "operator", shown[1])
        assert "operator" not in balancer(box, "user", "list").stdout

        authors = {(e["author"], e["action"], e["target"]) for e in box.client.get("/audit")}
        user = getpass.getuser()  # on the Unix socket, the OS user who ran the command
        for action in ("add_user", "password", "remove_user"):
            assert (user, action, "operator") in authors


def test_user_commands_refuse_bad_input_in_one_line_and_change_nothing(tmp_path: Path) -> None:
    with appliance(tmp_path) as box:
        short = balancer(box, "user", "add", "shorty", "--password-stdin", stdin="short\n")
        assert (short.returncode, short.stderr) == (
            1,
            "error: password: must be at least 12 characters long\n",
        )
        last = balancer(box, "user", "remove", "loadbalancer")
        assert last.returncode == 1
        assert last.stderr == "error: name: 'loadbalancer' is the last user: nobody could sign in\n"
        nobody = balancer(
            box, "user", "passwd", "nobody", "--password-stdin", stdin="long enough by now\n"
        )
        assert nobody.stderr == "error: name: there is no user 'nobody'\n"
        # A password is never an argument: the process list would show it to anyone.
        argv = balancer(box, "user", "add", "shorty", "--password", "long enough")
        assert argv.returncode == 2
        assert [u["name"] for u in box.client.get("/users")] == ["loadbalancer"]


def test_an_api_key_is_shown_once_listed_without_its_text_and_revoked(tmp_path: Path) -> None:
    with appliance(tmp_path) as box:
        made = balancer(box, "key", "create", "monitoring", "--owner", "loadbalancer")
        assert made.returncode == 0, made.stderr
        key = made.stdout.strip()
        assert made.stdout == f"{key}\n"  # the key alone, so `> file` keeps it
        assert key.startswith("blb_")
        assert (
            made.stderr
            == "API key 1 (monitoring) acts as loadbalancer; it is shown only this once\n"
        )

        listed = balancer(box, "key", "list")
        assert re.fullmatch(
            r" +1 monitoring +owner=loadbalancer +role=owner's +made [\d :-]+ in use\n",
            listed.stdout,
        )
        assert key not in listed.stdout + balancer(box, "key", "list", "--json").stdout

        revoked = balancer(box, "key", "revoke", "1")
        assert revoked.stdout == "API key 1 (monitoring, of loadbalancer) revoked\n"
        assert "revoked 2" in balancer(box, "key", "list").stdout  # the year it was revoked
        nowhere = balancer(box, "key", "revoke", "7")
        assert (nowhere.returncode, nowhere.stderr) == (1, "error: id: there is no API key 7\n")
        # Only an appliance user can own a key.
        stranger = balancer(box, "key", "create", "ci", "--owner", "mallory")
        assert stranger.stderr == "error: owner: there is no user 'mallory'\n"


def test_serve_prints_the_webui_address_and_its_certificate_fingerprint(tmp_path: Path) -> None:
    """What the operator starting an appliance needs first: where the WebUI is, and the
    fingerprint to compare with the browser's warning about its self-signed certificate."""
    data_dir, port = tmp_path / "appliance", free_port([WEBUI_HOST])
    serve = subprocess.Popen(
        [sys.executable, "-m", "balancer", "serve", "--dir", str(data_dir),
         "--listen", WEBUI_HOST, "--https-port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    box = Appliance(data_dir, serve, Client(api_socket(data_dir), user="tester"), port)
    printed: list[str] = []
    reader = threading.Thread(
        target=lambda: printed.extend(line.decode() for line in serve.stdout or ()), daemon=True
    )
    reader.start()
    try:
        wait_for("the ready message", lambda: any("Fingerprint=" in line for line in printed))
        text = "".join(printed)
        assert f"The WebUI is at:\n  https://{WEBUI_HOST}:{port}/lbadmin/\n" in text
        # The fingerprint of the certificate served, as openssl prints it.
        served = ssl.get_server_certificate((WEBUI_HOST, port))
        openssl = subprocess.run(
            ["openssl", "x509", "-noout", "-fingerprint", "-sha256"],
            input=served, capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        assert f"\n  {openssl}\n" in text, text
        wait_for("the API", lambda: balancer(box, "changes").returncode == 0)
        assert balancer(box, "changes").stdout == "nothing to commit, and nothing is running yet\n"
    finally:
        box.stop()
        kill_engine(data_dir)
        reader.join(10)
        if serve.stdout is not None:
            serve.stdout.close()
        box.client.close()


def test_a_value_typer_cannot_read_is_one_line_naming_the_option(tmp_path: Path) -> None:
    box = Appliance(tmp_path / "nothing", None, None)  # type: ignore[arg-type]  # never started
    wrong = balancer(box, "serve", "--https-port", "abc")
    assert (wrong.returncode, wrong.stdout) == (2, "")
    assert wrong.stderr == (
        "error: --https-port: Input should be a valid integer, unable to parse string as an "
        "integer\n"
    )
    missing = balancer(box, "rip", "drain", "CyberArk-PSM")
    assert (missing.returncode, missing.stderr) == (2, "error: Missing argument 'label'.\n")
    unknown = balancer(box, "status", "--colour")
    assert (unknown.returncode, unknown.stderr) == (2, "error: No such option: --colour\n")
    assert not (tmp_path / "nothing").exists()  # refused before anything was done
