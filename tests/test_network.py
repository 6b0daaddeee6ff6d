"""The appliance on the network, as a real process: the first start makes and prints the
password once, HTTPS answers only with a session or a key, plain HTTP only when asked for."""

from __future__ import annotations

import hashlib
import re
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
from cryptography import x509

from balancer.client import api_socket
from tests.appliance import WEBUI_HOST, free_port, kill_engine, shut_down, wait_for

STATIC = Path(__file__).parent.parent / "balancer" / "web" / "static"


def serve(data_dir: Path, *options: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "balancer", "serve", "--dir", str(data_dir),
         "--listen", WEBUI_HOST, *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )  # fmt: skip


def stop(process: subprocess.Popen[str], data_dir: Path) -> str:
    """Stop the appliance and its engine; what it printed."""
    shut_down(data_dir)
    try:
        out, _ = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        out, _ = process.communicate()
    finally:
        kill_engine(data_dir)
    return out


def test_the_first_start_prints_a_password_once_and_https_needs_it(tmp_path: Path) -> None:
    data_dir = tmp_path / "appliance"
    https, http = free_port([WEBUI_HOST]), free_port([WEBUI_HOST])
    process = serve(data_dir, "--https-port", str(https), "--http-port", str(http))
    try:
        base = f"https://{WEBUI_HOST}:{https}"
        with httpx.Client(base_url=base, verify=False, timeout=10) as client:
            wait_for("HTTPS", lambda: client.get("/api/v1/status").status_code == 401)
            page = client.get("/lbadmin/sign-in")
            token = re.search(r'name="csrf_token" value="(\w+)"', page.text)
            assert token is not None
            # The certificate was made at first start, for this node's name.
            pem = ssl.get_server_certificate((WEBUI_HOST, https))
            subject = x509.load_pem_x509_certificate(pem.encode()).subject
            assert subject.rfc4514_string() == f"CN={socket.gethostname()}"
        with httpx.Client(base_url=f"http://{WEBUI_HOST}:{http}", timeout=10) as plain:
            assert plain.get("/api/v1/status").status_code == 401  # asked for, and guarded
    finally:
        out = stop(process, data_dir)
    password = re.search(r"has the password\n\n    (\S+)\n", out)
    assert password is not None, out
    assert out.count(password.group(1)) == 1
    logged = b"".join(p.read_bytes() for p in (data_dir / "logs").iterdir())
    assert password.group(1).encode() not in logged

    # A second start has a user already: it makes and prints nothing.
    process = serve(data_dir)
    wait_for("the API", lambda: api_socket(data_dir).exists())
    assert "password" not in stop(process, data_dir)


def test_sign_in_and_an_api_key_over_https(tmp_path: Path) -> None:
    data_dir = tmp_path / "appliance"
    set_password = subprocess.run(
        [sys.executable, "-m", "balancer", "init", "--dir", str(data_dir), "--password-stdin"],
        input="a password for the test\n", capture_output=True, text=True, timeout=60,
        check=True,
    )  # fmt: skip
    assert set_password.stdout == "password of loadbalancer set\n"
    https = free_port([WEBUI_HOST])
    process = serve(data_dir, "--https-port", str(https))
    try:
        with httpx.Client(
            base_url=f"https://{WEBUI_HOST}:{https}", verify=False, timeout=10
        ) as browser:
            wait_for("HTTPS", lambda: browser.get("/lbadmin/sign-in").status_code == 200)
            token = re.search(
                r'name="csrf_token" value="(\w+)"', browser.get("/lbadmin/sign-in").text
            )
            assert token is not None
            signed_in = browser.post(
                "/lbadmin/sign-in",
                data={"username": "loadbalancer", "password": "a password for the test",
                      "csrf_token": token.group(1)},
            )  # fmt: skip
            assert signed_in.status_code == 303
            page = browser.get("/lbadmin/")
            assert page.status_code == 200
            csrf = re.search(r'name="csrf_token" value="(\w+)"', page.text)
            assert csrf is not None
            made = browser.post(
                "/api/v1/api-keys",
                json={"name": "monitoring"},
                headers={"X-CSRF-Token": csrf.group(1)},
            )
            assert made.status_code == 201, made.text
            key = made.json()["key"]
        with httpx.Client(
            base_url=f"https://{WEBUI_HOST}:{https}",
            verify=False,
            timeout=10,
            headers={"Authorization": f"Bearer {key}"},
        ) as remote:
            assert remote.get("/api/v1/status").status_code == 200
            remote.delete(f"/api/v1/api-keys/{made.json()['id']}")
            assert remote.get("/api/v1/status").status_code == 401
    finally:
        stop(process, data_dir)


def test_the_vendored_htmx_is_the_one_recorded() -> None:
    recorded = (STATIC / "VENDORED.md").read_text()
    digest = hashlib.sha256((STATIC / "htmx.min.js").read_bytes()).hexdigest()
    assert f"sha256 of `htmx.min.js`: `{digest}`" in recorded
