"""Hosts in network namespaces on one bridge, for tests that need real links to cut.

``network()`` gives a switch (a namespace holding only a bridge) and adds hosts to it, each
in its own namespace with one ``eth0`` in 198.18.0.0/15. Names carry this process's pid and a
counter, so runs side by side never meet. Whatever the test does, leaving the ``with`` block
stops every process started in the namespaces and deletes them; with the namespaces go their
links and the bridge. Import ``needs_netns`` to skip, with the reason, where that cannot run.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

PREFIX = 15  # every host is on-link to every other and to any VIP in 198.18.0.0/15
IP_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
_runs = itertools.count()


def _unavailable() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2's ip is not installed"
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, timeout=IP_TIMEOUT)
    if listed.returncode != 0:
        return f"ip netns is unavailable: {listed.stderr.decode(errors='replace').strip()}"
    return None


UNAVAILABLE = _unavailable()
needs_netns = pytest.mark.skipif(UNAVAILABLE is not None, reason=UNAVAILABLE or "")


def ip(*argv: str) -> str:
    """Run ``ip`` with ``argv``; its output, or AssertionError with what it said."""
    done = subprocess.run(["ip", *argv], capture_output=True, text=True, timeout=IP_TIMEOUT)
    if done.returncode != 0:
        raise AssertionError(f"ip {' '.join(argv)}: {done.stderr.strip()}")
    return done.stdout


@dataclass
class Host:
    """One namespace with ``eth0`` on the switch at ``address``."""

    name: str
    address: str
    port: str  # its end on the switch
    switch: str
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def command(self, *argv: str) -> list[str]:
        """``argv`` as run inside this host."""
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, *argv: str, timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` here to its end; its exit status is for the caller to judge."""
        return subprocess.run(self.command(*argv), capture_output=True, text=True, timeout=timeout)

    def popen(self, *argv: str, **options: Any) -> subprocess.Popen[bytes]:
        """Start ``argv`` here; it is stopped with the network if it still runs then."""
        process: subprocess.Popen[bytes] = subprocess.Popen(self.command(*argv), **options)
        self.processes.append(process)
        return process

    def addresses(self) -> list[str]:
        """The IPv4 addresses on ``eth0`` now, without their prefix."""
        out = ip("-n", self.name, "-4", "-o", "addr", "show", "dev", "eth0")
        return [line.split()[3].split("/")[0] for line in out.splitlines()]

    def cut(self) -> None:
        """Pull the cable: the switch's end goes down and the host loses its carrier."""
        ip("-n", self.switch, "link", "set", self.port, "down")

    def heal(self) -> None:
        ip("-n", self.switch, "link", "set", self.port, "up")


@dataclass
class Network:
    switch: str
    hosts: list[Host] = field(default_factory=list)

    def host(self, label: str, address: str) -> Host:
        """A new host called ``label`` at ``address`` (in 198.18.0.0/15) on the switch."""
        if not address.startswith(("198.18.", "198.19.")):
            raise ValueError(f"{address} is outside 198.18.0.0/15")
        number = len(self.hosts)
        host = Host(f"{self.switch}-{label}", address, f"p{number}", self.switch)
        ip("netns", "add", host.name)
        self.hosts.append(host)
        ip("-n", self.switch, "link", "add", host.port, "type", "veth",
           "peer", "name", "eth0", "netns", host.name)  # fmt: skip
        ip("-n", self.switch, "link", "set", host.port, "master", "br0", "up")
        ip("-n", host.name, "addr", "add", f"{address}/{PREFIX}", "dev", "eth0")
        ip("-n", host.name, "link", "set", "lo", "up")
        ip("-n", host.name, "link", "set", "eth0", "up")
        return host


@contextlib.contextmanager
def network() -> Iterator[Network]:
    """A switch to add hosts to; all of it is gone when the block ends, however it ends."""
    if UNAVAILABLE is not None:
        pytest.skip(UNAVAILABLE)
    net = Network(f"bt{os.getpid()}-{next(_runs)}")
    try:
        ip("netns", "add", net.switch)
        ip("-n", net.switch, "link", "add", "br0", "type", "bridge")
        ip("-n", net.switch, "link", "set", "br0", "up")
        yield net
    finally:
        for host in net.hosts:
            _stop(host)
        for name in [host.name for host in net.hosts] + [net.switch]:
            with contextlib.suppress(AssertionError):
                ip("netns", "del", name)


def _stop(host: Host) -> None:
    """End every process in ``host``: those the test started, and whatever they left behind
    there (a daemon that forked); the namespace is this run's, so all of them are ours."""
    for process in host.processes:
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + STOP_TIMEOUT
    for process in host.processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
    with contextlib.suppress(AssertionError):
        for pid in ip("netns", "pids", host.name).split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
    for process in host.processes:
        if process.poll() is None:
            process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=STOP_TIMEOUT)
