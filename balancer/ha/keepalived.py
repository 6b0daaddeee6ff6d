"""keepalived for one node of the pair: its configuration, and the process that runs it.

``render(settings)`` is pure: one VRRP version 3 instance holds every floating IP, adverts go
unicast between the two node addresses only (VRRP's own authentication is no security, so the
exchange stays on the nodes' own link), and a ``vrrp_script`` tracks the local engine, so a node
whose engine is dead goes to FAULT and gives the floating IPs up. Every state change is written
to a notify FIFO, which ``role`` reads.

``Keepalived`` is the one door to the process: it tests a configuration with ``keepalived -t``
before putting it in place, runs keepalived in the foreground as its child (or adopts the one an
earlier run of the management service left running), reloads it with SIGHUP and stops it by
pid. Stop keepalived before the engine: the other order has a node that still holds the
floating IPs answer with resets.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import re
import signal
import stat
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from balancer import tool

KEEPALIVED = "/usr/sbin/keepalived"
# Seconds between adverts. 0.2 s has a silent peer replaced in 3 x 0.2 s + skew (under 0.75 s);
# the conservative profile tolerates a busy network or host at the cost of about 3.6 s.
PROFILES: dict[str, float] = {"default": 0.2, "conservative": 1.0}
ADVERT_RANGE = (0.01, 40.95)  # VRRPv3 counts centiseconds in 12 bits
INSTANCE = "balancer"
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
CHECK_TIMEOUT = 30.0
POLL = 0.05
# keepalived runs no instance without a floating IP, yet a node with no virtual service yet
# must still know its state: then the instance holds one address no one can reach, on the
# loopback interface and not tracked (lo must not fault the node).
PLACEHOLDER = {4: "127.255.255.254/32", 6: "fe80::ba1a:ce/128"}
# What keepalived -t prefixes each complaint with: "(FILE: Line N) ".
_COMPLAINT = re.compile(r"^\((?P<file>[^:]*): Line (?P<line>\d+)\)\s*")
_WORD = re.compile(r"^[^\s\"'\\{}#!]+$")


class KeepalivedError(Exception):
    """keepalived refused a configuration, or could not be started or stopped; one line."""


@dataclass(frozen=True)
class EngineCheck:
    """The command keepalived runs to know the local engine answers; exit 0 means it does.

    keepalived counts the interval and timeout in whole seconds. One failure is enough to give
    the floating IPs up, so a dead engine is replaced within about a second and a half; the
    command should retry within its own time if one missed answer is not a verdict.
    """

    command: tuple[str, ...]
    interval: int = 1
    timeout: int = 1
    fall: int = 1
    rise: int = 2

    def __post_init__(self) -> None:
        if not self.command or not self.command[0].startswith("/"):
            raise ValueError(f"check.command: {self.command!r} must start with an absolute path")
        for word in self.command:
            if not _WORD.match(word):
                raise ValueError(
                    f"check.command: {word!r} has a space, quote, brace or comment sign, "
                    "which keepalived would split or drop"
                )
        for name in ("interval", "timeout", "fall", "rise"):
            value = getattr(self, name)
            if not 1 <= value <= 3600:
                raise ValueError(f"check.{name}: {value} must be between 1 and 3600")

    @classmethod
    def for_node(cls, data_dir: Path) -> EngineCheck:
        """``balancer.ha.engine_check`` on this node's data directory, run by this Python:
        the ``balancer`` command would import typer and pydantic every second for nothing.
        The interpreter's path is kept as it is, not resolved: a virtualenv's python is a
        symlink, and the interpreter it points to knows nothing of the virtualenv."""
        return cls(
            (os.path.abspath(sys.executable), "-m", "balancer.ha.engine_check", "--dir",
             str(data_dir.resolve()))
        )  # fmt: skip


@dataclass(frozen=True)
class Settings:
    """What one node's keepalived needs. ``local`` and ``peer`` are the two nodes' own
    addresses on ``interface``; ``vips`` the floating IPs, with a prefix or without (a single
    address). Floating IPs of the other family than the nodes' are moved too, but not advertised.
    With none of the nodes' family, the instance holds ``PLACEHOLDER`` instead.
    Both nodes must agree on ``router`` (the VRID), ``advert`` and ``vips``; the node with the
    higher ``priority`` takes the floating IPs when both start, and with ``preempt`` also takes
    them back when it returns."""

    interface: str
    local: str
    peer: str
    vips: tuple[str, ...]
    check: EngineCheck
    fifo: Path
    advert: float = PROFILES["default"]
    preempt: bool = False
    priority: int = 100
    router: int = 51
    # Gratuitous ARP (unsolicited NA for IPv6) from a new owner, and from an owner that hears
    # another one after a split brain: a burst of ``garp_repeat`` at once, another
    # ``garp_delay`` s later for switches that missed it, and one every ``garp_refresh`` s
    # while it stays the owner (0: none).
    garp_repeat: int = 3
    garp_delay: int = 1
    garp_refresh: int = 0

    def __post_init__(self) -> None:
        if not _WORD.match(self.interface) or len(self.interface) > 15 or "/" in self.interface:
            raise ValueError(f"interface: {self.interface!r} is not an interface name")
        local, peer = _address("local", self.local), _address("peer", self.peer)
        if local == peer:
            raise ValueError(f"peer: {self.peer} is this node's own address")
        if local.version != peer.version:
            raise ValueError(f"peer: {self.peer} is not of the same family as {self.local}")
        seen: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
        for vip in self.vips:
            address = _vip(vip).ip
            if address in seen or address in (local, peer):
                raise ValueError(f"vips: {vip} is given twice or is a node's own address")
            seen.add(address)
        if not self.fifo.is_absolute() or not _WORD.match(str(self.fifo)):
            raise ValueError(f"fifo: {self.fifo} must be an absolute path without spaces")
        low, high = ADVERT_RANGE
        hundredths = self.advert * 100
        if not low <= self.advert <= high or abs(round(hundredths) - hundredths) > 1e-6:
            raise ValueError(
                f"advert: {self.advert} s must be between {low} and {high} s "
                "in hundredths of a second"
            )
        for name, lowest, highest in (
            ("priority", 1, 254),
            ("router", 1, 255),
            ("garp_repeat", 1, 100),
            ("garp_delay", 0, 3600),
            ("garp_refresh", 0, 3600),
        ):
            value = getattr(self, name)
            if not lowest <= value <= highest:
                raise ValueError(f"{name}: {value} must be between {lowest} and {highest}")

    @property
    def silence(self) -> float:
        """How long this node hears nothing from the peer before it takes over: three adverts
        and a skew that makes the node of lower priority wait longer (RFC 5798)."""
        return 3 * self.advert + (256 - self.priority) * self.advert / 256


def _address(field: str, text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"{field}: {text!r} is not an IP address") from None


def _vip(text: str) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    try:
        return ipaddress.ip_interface(text)
    except ValueError:
        raise ValueError(f"vips: {text!r} is not an IP address") from None


def render(settings: Settings) -> str:
    """keepalived.conf for this node."""
    family = ipaddress.ip_address(settings.local).version
    vips = [_vip(vip) for vip in settings.vips]
    advertised = [vip for vip in vips if vip.version == family]
    others = [vip for vip in vips if vip.version != family]
    held = [f"{vip} dev {settings.interface}" for vip in advertised] or [
        f"{PLACEHOLDER[family]} dev lo no_track"
    ]
    check = settings.check
    lines = [
        "# Written by Balancer for this node of the HA pair; edits here are overwritten.",
        "global_defs {",
        "    vrrp_version 3",  # version 2 rounds the advert interval to whole seconds
        # Run the engine check as root, and refuse it if anyone else could change it.
        "    script_user root",
        "    enable_script_security",
        f"    notify_fifo {settings.fifo}",
        "}",
        "",
        "vrrp_script engine {",
        f'    script "{" ".join(check.command)}"',
        f"    interval {check.interval}",
        f"    timeout {check.timeout}",
        f"    fall {check.fall}",
        f"    rise {check.rise}",
        "}",
        "",
        f"vrrp_instance {INSTANCE} {{",
        # Both nodes start as BACKUP: nopreempt only holds for an instance that does.
        "    state BACKUP",
        f"    interface {settings.interface}",
        f"    virtual_router_id {settings.router}",
        f"    priority {settings.priority}",
        f"    advert_int {settings.advert:g}",
        *([] if settings.preempt else ["    nopreempt"]),
        f"    unicast_src_ip {settings.local}",
        "    unicast_peer {",
        f"        {settings.peer}",
        "    }",
        "    virtual_ipaddress {",
        *(f"        {vip}" for vip in held),
        "    }",
    ]
    if others:
        lines += [
            "    virtual_ipaddress_excluded {",
            *(f"        {vip} dev {settings.interface}" for vip in others),
            "    }",
        ]
    lines += [
        "    track_script {",
        "        engine",
        "    }",
        f"    garp_master_repeat {settings.garp_repeat}",
        f"    garp_master_delay {settings.garp_delay}",
        f"    garp_master_refresh {settings.garp_refresh}",
        # Split brain healing: the owner that hears the other owner's (lower priority) advert
        # announces itself again, as its gratuitous ARP may not be the last clients saw; the
        # other sends one advert before it yields, so the owner hears it even then.
        f"    garp_lower_prio_repeat {settings.garp_repeat}",
        f"    garp_lower_prio_delay {settings.garp_delay}",
        "    higher_prio_send_advert true",
        "}",
    ]
    return "\n".join(lines) + "\n"


def complaints(output: str) -> str:
    """What ``keepalived -t`` said, as one line."""
    found = []
    for line in output.splitlines():
        line = line.strip()
        if not line:
            continue
        match = _COMPLAINT.match(line)
        if match:
            line = f"line {match['line']}: {line[match.end() :]}"
        if line not in found:
            found.append(line)
    return f"keepalived refused its configuration: {'; '.join(found)}"


class Keepalived:
    """keepalived for this node, its files in ``directory``. ``wrap`` goes before every
    keepalived command line (``ip netns exec NAME`` in tests)."""

    def __init__(self, directory: Path, binary: str = KEEPALIVED, wrap: Sequence[str] = ()) -> None:
        self.directory = directory
        self.binary = binary
        self.wrap = list(wrap)
        self.config = directory / "keepalived.conf"
        self.log = directory / "keepalived.log"
        self.pid_file = directory / "keepalived.pid"
        self.vrrp_pid_file = directory / "keepalived-vrrp.pid"
        self._process: asyncio.subprocess.Process | None = None
        self._adopted: int | None = None

    def adopt(self) -> bool:
        """Take on the keepalived that runs this directory's configuration, left by an earlier
        run of the management service, rather than start another: it holds the floating IPs
        it holds. Whether there is one."""
        self._adopted = self.pid()
        return self._adopted is not None

    async def check(self, config: Path) -> None:
        """``keepalived -t``; KeepalivedError with its complaints, warnings included."""
        if not config.is_file():  # keepalived -t passes a missing file
            raise KeepalivedError(f"keepalived configuration {config} does not exist")
        try:
            status, output = await tool.run(
                [*self.wrap, self.binary, "-t", "-f", str(config)], CHECK_TIMEOUT
            )
        except TimeoutError:
            raise KeepalivedError(f"keepalived -t did not finish in {CHECK_TIMEOUT}s") from None
        said = output.strip()
        if status != 0 or said:
            raise KeepalivedError(complaints(said or f"exit status {status}"))

    async def configure(self, settings: Settings) -> None:
        """Test the configuration for ``settings`` and put it in place; the running keepalived
        reads it on ``reload``. The notify FIFO is made here, not by keepalived: one that
        keepalived made itself is replaced on reload, and a reader of the old one hears no more.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        candidate = self.config.with_suffix(".new")
        candidate.write_text(render(settings))
        try:
            await self.check(candidate)
        except KeepalivedError:
            candidate.unlink(missing_ok=True)
            raise
        candidate.replace(self.config)
        _fifo(settings.fifo)

    async def start(self) -> None:
        """Run keepalived on the configuration in place; return once its VRRP process runs.
        One left running by an earlier run of Balancer is stopped first."""
        if not self.config.is_file():
            raise KeepalivedError(f"keepalived has no configuration yet at {self.config}")
        await self.stop()
        self._adopted = None
        for path in (self.pid_file, self.vrrp_pid_file):
            path.unlink(missing_ok=True)
        command = [*self.wrap, self.binary, "--vrrp", "--dont-fork", "--log-console"]
        command += ["--log-detail", "--no-syslog", "-f", str(self.config)]
        command += ["-p", str(self.pid_file), "-r", str(self.vrrp_pid_file)]
        with self.log.open("ab") as log:
            # Its own session: a ^C meant for Balancer must not stop keepalived before the
            # engine is ready for it (stop order above).
            self._process = await asyncio.create_subprocess_exec(
                *command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        for _ in range(int(START_TIMEOUT / POLL)):
            if self._process.returncode is not None:
                raise KeepalivedError(f"keepalived exited at start: {_last_line(self.log)}")
            if _live(self.vrrp_pid_file) is not None:
                return
            await asyncio.sleep(POLL)
        raise KeepalivedError(f"keepalived did not start in {START_TIMEOUT}s; see {self.log}")

    def running(self) -> bool:
        """Whether the keepalived this object started or adopted still runs."""
        if self._process is not None:
            return self._process.returncode is None
        return self._adopted is not None and self.pid() == self._adopted

    async def wait(self) -> str:
        """Wait until the keepalived this object started or adopted ends, for a supervisor to
        restart it; why it ended, in one line."""
        if self._process is not None:
            status = await self._process.wait()
            return f"keepalived exited with status {status}: {_last_line(self.log)}"
        if self._adopted is None:
            raise KeepalivedError("keepalived was neither started nor adopted here")
        await _ended(self._adopted)
        return f"keepalived (pid {self._adopted}) ended: {_last_line(self.log)}"

    def reload(self) -> None:
        """Have keepalived read the configuration in place; the floating IPs stay put."""
        pid = self.pid()
        if pid is None:
            raise KeepalivedError("keepalived does not run, so it cannot reload")
        os.kill(pid, signal.SIGHUP)

    async def stop(self) -> None:
        """Stop keepalived: it tells the peer (priority 0), which takes the floating IPs over
        at once, and removes them here."""
        if self._process is not None:
            # Ours, even if its pid file is gone.
            with contextlib.suppress(ProcessLookupError):
                self._process.terminate()
            try:
                await asyncio.wait_for(self._process.wait(), STOP_TIMEOUT)
            except TimeoutError:
                self._process.kill()
                await self._process.wait()
            self._process = None
        self._adopted = None
        pid = self.pid()  # one an earlier run of Balancer left running
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            for _ in range(int(STOP_TIMEOUT / POLL)):
                if self.pid() is None:
                    break
                await asyncio.sleep(POLL)
            else:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def pid(self) -> int | None:
        """keepalived's main pid; a stale pid file may name some other process by now."""
        return _live(self.pid_file, str(self.config))


async def _ended(pid: int) -> None:
    """Return once process ``pid`` has ended; it need not be this process's child."""
    try:
        descriptor = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    ended = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_reader(descriptor, ended.set)  # a pidfd reads ready once its process has ended
    try:
        await ended.wait()
    finally:
        loop.remove_reader(descriptor)
        os.close(descriptor)


def _fifo(path: Path) -> None:
    try:
        if stat.S_ISFIFO(path.stat().st_mode):
            return
        path.unlink()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path, 0o600)


def _live(pid_file: Path, config: str | None = None) -> int | None:
    """The pid in ``pid_file`` if that process runs keepalived (on ``config``, if given)."""
    try:
        pid = int(pid_file.read_text().split()[0])
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError, IndexError):
        return None
    if not command or not command[0].endswith(b"keepalived"):
        return None
    if config is not None and config.encode() not in command:
        return None
    return pid


def _last_line(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no output"
    # keepalived's console lines start with the date; the reason is after it.
    return lines[-1].split(": ", 1)[-1] if lines else "no output"
