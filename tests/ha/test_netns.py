"""The namespace harness the HA tests stand on: hosts reach each other on the switch, a cut
link is a lost carrier, and nothing it made outlives the block, even one that fails."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.netns import ip, needs_netns, network


class Boom(Exception):
    pass


def _namespaces() -> set[str]:
    return {line.split()[0] for line in ip("netns", "list").splitlines() if line.strip()}


LISTEN = "import socket; socket.create_server(('0.0.0.0', 7000)).accept()"
CONNECT = "import socket, sys; socket.create_connection((sys.argv[1], 7000), timeout=1)"


@needs_netns
def test_hosts_reach_each_other_until_the_link_is_cut() -> None:
    with network() as net:
        first = net.host("a", "198.18.0.1")
        second = net.host("b", "198.18.0.2")
        second.popen(sys.executable, "-c", LISTEN)
        for _ in range(50):  # until the listener listens
            done = first.run(sys.executable, "-c", CONNECT, second.address)
            if done.returncode == 0:
                break
            time.sleep(0.1)
        assert done.returncode == 0, done.stderr
        first.cut()
        link = ip("-n", first.name, "-o", "link", "show", "dev", "eth0")
        assert "NO-CARRIER" in link
        cut = first.run(sys.executable, "-c", CONNECT, second.address)
        assert cut.returncode != 0
        first.heal()
        assert first.addresses() == ["198.18.0.1"]


@needs_netns
def test_a_failing_block_leaves_no_namespace_or_process_behind() -> None:
    processes: list[subprocess.Popen[bytes]] = []
    with pytest.raises(Boom), network() as net:  # noqa: PT012 (the block is the subject)
        host = net.host("a", "198.18.0.1")
        processes.append(host.popen("sleep", "60"))
        # A daemon that leaves its starter: only the namespace knows it is there.
        host.run("sh", "-c", "sleep 60 >/dev/null 2>&1 &")
        made = {net.switch, host.name}
        assert made <= _namespaces()
        pids = ip("netns", "pids", host.name).split()
        assert len(pids) == 2
        raise Boom
    assert not made & _namespaces()  # others' tests may add and remove their own meanwhile
    assert processes[0].returncode is not None
    for pid in pids:
        assert _dead(pid)


def _dead(pid: str) -> bool:
    """Gone, or a zombie: this machine's init may be slow to reap an orphan."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][:1] in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):
        return True


@needs_netns
def test_addresses_outside_the_test_range_are_refused() -> None:
    with network() as net, pytest.raises(ValueError, match=r"10\.0\.0\.1 is outside 198\.18"):
        net.host("a", "10.0.0.1")
