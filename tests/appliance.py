"""Running the whole appliance for a test: `balancer serve` as a real process, the lab, and
clients that learn which PSM server they reached."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import httpx

from balancer import users
from balancer.client import ApiError, Client, api_socket
from balancer.engines.haproxy.paths import Paths
from balancer.lab.process import lab_status, run_lab, stop_lab
from balancer.lab.server import LabServerSpec
from balancer.store import Store

# Generous: under `make test` several workers start appliances at once on a small machine.
START_TIMEOUT = 60.0
# Test appliances listen on loopback only, each on a port that was free when it started.
WEBUI_HOST = "127.0.0.1"
PASSWORD = "the lab's appliance password"


def free_port(hosts: Iterable[str]) -> int:
    """A port that every one of ``hosts`` can bind right now."""
    hosts = list(hosts)
    for _ in range(100):
        with socket.socket() as first:
            first.bind((hosts[0], 0))
            port: int = first.getsockname()[1]
            others = [socket.socket() for _ in hosts[1:]]
            try:
                for sock, host in zip(others, hosts[1:], strict=True):
                    sock.bind((host, port))
                return port
            except OSError:
                continue
            finally:
                for sock in others:
                    sock.close()
    raise AssertionError(f"no port free on all of {hosts}")


def wait_for(what: str, ready: object, timeout: float = 20.0) -> None:
    """Poll ``ready()`` until it is true or stops raising; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = ready()  # type: ignore[operator]
            if last:
                return
        except Exception as error:
            last = error
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


@dataclass
class Appliance:
    data_dir: Path
    process: subprocess.Popen[bytes]
    client: Client
    https_port: int = 0
    engine: str = "builtin"

    @property
    def webui(self) -> str:
        return f"https://{WEBUI_HOST}:{self.https_port}/lbadmin/"

    def start(self, *, cwd: Path | None = None, open_files: int | None = None) -> None:
        self.process = spawn(
            self.data_dir, self.https_port, self.engine, cwd=cwd, open_files=open_files
        )
        try:
            wait_for("the appliance's API", self._listening, START_TIMEOUT)
        except AssertionError:
            # Reaped here, or its warning fails whichever test comes next.
            self.process.kill()
            self.process.wait()
            raise

    def stop(self) -> None:
        """Stop `balancer serve` and its engine, as `balancer stop --engine` does."""
        with contextlib.suppress(ApiError):
            self.client.post("/shutdown", engine="true")
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            pass
        finally:  # also when the run is interrupted while it waits
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()

    def _listening(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"balancer serve exited with {self.process.returncode}")
        with socket.socket(socket.AF_UNIX) as probe:
            return probe.connect_ex(str(api_socket(self.data_dir))) == 0

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "BALANCER_DIR": str(self.data_dir)}
        return subprocess.run(
            [sys.executable, "-m", "balancer", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def http(self) -> httpx.Client:
        """The API on the Unix socket as a plain HTTP client, for what ``client`` will not
        send: a body as it is, a header of the test's own."""
        return httpx.Client(
            transport=httpx.HTTPTransport(uds=str(api_socket(self.data_dir))),
            base_url="http://balancer/api/v1",
            headers={"X-Balancer-User": "tester"},
            timeout=30,
        )

    def certificate(self, path: Path) -> str:
        """The WebUI's certificate (webui.pem without its key), written to ``path`` for a
        client to trust; its PEM."""
        pem = (self.data_dir / "webui.pem").read_text()
        found = re.search(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----\n", pem, re.S)
        assert found is not None
        path.write_text(found[0])
        return found[0]

    def engine_pid(self) -> int:
        return int(self.client.get("/status")["engine"]["pid"])

    def server(self, service: str, label: str) -> dict[str, object]:
        engine = self.client.get("/status")["engine"]
        vs = next(v for v in engine["virtual_services"] if v["label"] == service)
        server: dict[str, object] = next(s for s in vs["real_servers"] if s["label"] == label)
        return server


def spawn(
    data_dir: Path,
    https_port: int,
    engine: str,
    *,
    cwd: Path | None = None,
    open_files: int | None = None,
) -> subprocess.Popen[bytes]:
    """`balancer serve`; with ``cwd``, started there and given the data directory relative to
    it; with ``open_files``, under that limit of open files (and so is the engine it starts)."""

    named = data_dir.relative_to(cwd) if cwd is not None else data_dir
    with (data_dir.parent / "serve.err").open("ab") as errors:
        return subprocess.Popen(
            [
                sys.executable, "-m", "balancer", "serve", "--dir", str(named),
                "--listen", WEBUI_HOST, "--https-port", str(https_port), "--engine", engine,
            ],
            cwd=cwd,
            preexec_fn=None if open_files is None else partial(_limit_files, open_files),
            stdout=subprocess.DEVNULL,
            stderr=errors,
        )  # fmt: skip


def _limit_files(count: int) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (count, count))


@contextlib.contextmanager
def appliance(root: Path, engine: str = "builtin", cwd: Path | None = None) -> Iterator[Appliance]:
    """`balancer serve` on a fresh data directory; see ``spawn`` for ``cwd``."""
    data_dir = root / "appliance"
    data_dir.mkdir(parents=True)
    with Store(data_dir / "balancer.db") as store:  # as `balancer init` would
        users.add_user(store, "loadbalancer", PASSWORD, author="tester")
    client = Client(api_socket(data_dir), user="tester", timeout=30)
    running = Appliance(
        data_dir,
        None,  # type: ignore[arg-type]  # started just below
        client,
        free_port([WEBUI_HOST]),
        engine,
    )
    try:
        # Inside: `balancer serve` starts the engine before its API answers, and an appliance
        # too slow to answer leaves that engine running unless it is killed below.
        running.start(cwd=cwd)
        yield running
    finally:
        try:
            if running.process is not None:
                running.stop()
        finally:
            client.close()
            kill_engine(data_dir)


def shut_down(data_dir: Path) -> None:
    """Ask the appliance in ``data_dir`` to stop with its engine, as `balancer stop --engine`
    does, if it answers at all (``kill_engine`` is for one that does not)."""
    with contextlib.suppress(ApiError), Client(api_socket(data_dir), timeout=30) as client:
        client.post("/shutdown", engine="true")


def kill_engine(data_dir: Path) -> None:
    """Never leave an engine behind, whatever the test did to the daemon: the engine outlives
    `balancer serve` by design, so a daemon that was killed, or never answered its shutdown,
    leaves it running (the built-in engine, or HAProxy's master)."""
    for pid_file in (data_dir / "engine.pid", Paths(data_dir).pid_file):
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


@contextlib.contextmanager
def lab(root: Path, specs: list[LabServerSpec]) -> Iterator[Path]:
    """The lab's PSM servers, served from a thread of the test process."""
    lab_dir = root / "lab"
    thread = threading.Thread(target=asyncio.run, args=(run_lab(specs, lab_dir),), daemon=True)
    thread.start()
    wait_for("the lab", lambda: asyncio.run(lab_status(lab_dir)))
    try:
        yield lab_dir
    finally:
        asyncio.run(stop_lab(lab_dir))
        thread.join(10)


NET = "127.96.0"
HOSTS = {
    "rdp_vip": f"{NET}.100",
    "web_vip": f"{NET}.101",
    "PSM1": f"{NET}.105",
    "PSM2": f"{NET}.106",
}


@dataclass(frozen=True)
class Guide:
    """The guide's setup, on ports that were free when it started so that runs never collide."""

    box: Appliance
    lab_dir: Path
    rdp_vip: tuple[str, int]
    web_vip: tuple[str, int]


@contextlib.contextmanager
def guide_setup(root: Path, engine: str = "builtin") -> Iterator[Guide]:
    """The guide's configuration, made with the `balancer` command, in front of two lab PSMs."""
    rdp, web = free_port(HOSTS.values()), free_port(HOSTS.values())
    specs = [LabServerSpec(name, HOSTS[name], rdp, web) for name in ("PSM1", "PSM2")]
    with lab(root, specs) as lab_dir, appliance(root, engine) as box:
        made = box.cli(
            "psm", "create", "--rdp-vip", HOSTS["rdp_vip"], "--web-vip", HOSTS["web_vip"],
            "--server", f"PSM1={HOSTS['PSM1']}", "--server", f"PSM2={HOSTS['PSM2']}",
            "--rdp-port", str(rdp), "--web-port", str(web),
        )  # fmt: skip
        assert made.returncode == 0, made.stderr
        for service in ("CyberArk-PSM", "CyberArk-PSM-Web"):
            # The guide's 4 s interval works; a short one keeps the test quick.
            box.client.patch(
                f"/virtual-services/{service}", {"health_check": {"interval": 0.2, "timeout": 1}}
            )
        box.client.post("/commit")
        yield Guide(box, lab_dir, (HOSTS["rdp_vip"], rdp), (HOSTS["web_vip"], web))
