"""This node's facts for the drift of node settings (balancer.ha.drift), gathered cheaply.

The hostname, resolvers, the kernel's clock, the engine and the version are read at every ask
(a file, a system call); the MTU and the routes to the real servers come from one ``ip -j
-batch`` run, kept ``REFRESH`` seconds, as the peer asks every second. Whatever cannot be read
is ``unknown`` with why, in one line; nothing here raises to its caller.
"""

from __future__ import annotations

import asyncio
import ctypes
import ipaddress
import json
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from balancer.controller import Controller
from balancer.ha.drift import Comparison, Facts, Route, compare
from balancer.pair.link import Link
from balancer.pair.pairing import version
from balancer.pair.status import PairView
from balancer.store import Store

REFRESH = 5.0  # s: the network's facts are this old at most
# Below the link's 3 s: the status answer waits on ip, and a hung ip must not silence the link.
IP_TIMEOUT = 1.0
RESOLV_CONF = Path("/etc/resolv.conf")
# adjtimex(2): the clock state it returns when the clock is not synchronised, and the status bit
# a time daemon clears once it is.
TIME_ERROR = 5
STA_UNSYNC = 0x0040


class _Timex(ctypes.Structure):
    """Linux's ``struct timex`` (adjtimex(2)); only read here."""

    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time_sec", ctypes.c_long),
        ("time_usec", ctypes.c_long),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        ("reserved", ctypes.c_int * 11),
    ]


def kernel_clock() -> tuple[int, int, int]:
    """adjtimex(2) asked, changing nothing: its clock state, status bits and maxerror (µs);
    OSError if it cannot be asked."""
    timex = _Timex()  # modes 0: read only
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        state = int(libc.adjtimex(ctypes.byref(timex)))
    except (OSError, AttributeError) as error:
        raise OSError(f"adjtimex: {error}") from None
    if state < 0:
        raise OSError(f"adjtimex: {ctypes.get_errno()}")
    return state, timex.status, timex.maxerror


def synchronised(state: int, status: int, max_error_us: int) -> tuple[bool, float | None]:
    """Whether the kernel counts its clock synchronised, and its bound on the error in
    seconds (None when it is not synchronised: the bound then only grows)."""
    if state == TIME_ERROR or status & STA_UNSYNC:
        return False, None
    return True, max_error_us / 1e6


def resolvers(text: str) -> tuple[str, ...]:
    """The nameservers of a resolv.conf, in order."""
    found = []
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "nameserver":
            found.append(words[1])
    return tuple(found)


@dataclass(frozen=True)
class Network:
    """What ``ip`` said: the MTU of the interface with the pair's address, the routes."""

    mtu: int | None
    routes: tuple[Route, ...]
    unknown: dict[str, str] = field(default_factory=dict)


def batch(servers: Sequence[str]) -> str:
    """``ip -batch``'s input: the addresses, then a route per real server (line 2 onwards)."""
    return "".join(["address show\n", *(f"route get {server}\n" for server in servers)])


def network(local: str | None, servers: Sequence[str], out: str, err: str) -> Network:
    """``ip -j -force -batch``'s answer to ``batch(servers)``: each command that
    answered printed a JSON line; each that failed its error then ``Command failed -:N`` on
    standard error."""
    failed = _failures(err)
    interfaces: list[dict[str, Any]] = []
    found: dict[str, dict[str, Any]] = {}
    for line in out.splitlines():
        try:
            answer = json.loads(line)
        except ValueError:
            continue
        for item in answer if isinstance(answer, list) else []:
            if not isinstance(item, dict):
                continue
            if "ifname" in item:
                interfaces.append(item)
            elif "dst" in item:
                found[_canonical(str(item["dst"]))] = item
    unknown: dict[str, str] = {}
    mtu = None
    if local is None:
        unknown["mtu"] = "this node is in no pair"
    elif 1 in failed:
        unknown["mtu"] = f"ip address: {failed[1]}"
    else:
        mtu = _mtu(interfaces, local)
        if mtu is None:
            unknown["mtu"] = f"no interface has {local}"
    routes = []
    for number, server in enumerate(servers, 2):
        item = found.get(_canonical(server))
        if item is None:
            why = failed.get(number, "ip did not say")
            routes.append(Route(server, unknown=f"no route: {why}"))
        else:
            gateway = item.get("gateway")
            device = item.get("dev")
            routes.append(
                Route(
                    server,
                    gateway=None if gateway is None else str(gateway),
                    device=None if device is None else str(device),
                )
            )
    return Network(mtu, tuple(routes), unknown)


def _failures(err: str) -> dict[int, str]:
    """The batch's failed commands, by line number: what ip said before each."""
    failed: dict[int, str] = {}
    said: list[str] = []
    for line in err.splitlines():
        head, sep, number = line.strip().rpartition("Command failed -:")
        if sep and not head and number.isdigit():
            failed[int(number)] = " ".join(said) or "failed"
            said = []
        elif line.strip():
            said.append(line.strip())
    return failed


def _mtu(interfaces: list[dict[str, Any]], local: str) -> int | None:
    wanted = _canonical(local)
    for interface in interfaces:
        for address in interface.get("addr_info", []):
            if _canonical(str(address.get("local", ""))) == wanted:
                mtu = interface.get("mtu")
                return mtu if isinstance(mtu, int) else None
    return None


def _canonical(address: str) -> str:
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return address


class Gatherer:
    """This node's ``Facts`` on ask, the network's kept ``refresh`` seconds (on ``clock``)."""

    def __init__(
        self,
        store: Store,
        controller: Controller,
        *,
        ip: Sequence[str] = ("ip",),
        resolv_conf: Path = RESOLV_CONF,
        kernel: Callable[[], tuple[int, int, int]] | None = None,  # kernel_clock's answer
        refresh: float = REFRESH,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.controller = controller
        self.ip = tuple(ip)
        self.resolv_conf = resolv_conf
        self.kernel = kernel
        self.refresh = refresh
        self.clock = clock
        self.wall = wall
        # When ip last answered, for which pair address and running revision, and what.
        self._network: tuple[float, tuple[str | None, int | None], Network] | None = None
        self._lock = asyncio.Lock()

    async def gather(self) -> Facts:
        node = self.store.node_settings()
        unknown: dict[str, str] = {}
        try:
            found: tuple[str, ...] | None = resolvers(self.resolv_conf.read_text())
        except (OSError, UnicodeDecodeError) as error:
            found = None
            unknown["resolvers"] = f"cannot read {self.resolv_conf}: {_said(error)}"
        try:
            synced, max_error = synchronised(*(self.kernel or kernel_clock)())
        except OSError as error:
            synced, max_error = None, None
            unknown["synchronised"] = _said(error)
        local = None if node.pair is None else str(node.pair.local_address)
        net = await self._network_facts(local)
        return Facts(
            hostname=node.hostname,
            system_hostname=socket.gethostname(),
            resolvers=found,
            synchronised=synced,
            max_error=max_error,
            mtu=net.mtu,
            routes=net.routes,
            engine=self.controller.engine.name,
            workers=node.workers,
            version=version(),
            unknown={**unknown, **net.unknown},
            wall=self.wall(),  # last: the peer's link compares it with its own clock
        )

    async def _network_facts(self, local: str | None) -> Network:
        async with self._lock:  # one ip run at a time; the others take its answer
            applied = self.store.applied()
            key = (local, None if applied is None else applied.revision)
            kept = self._network
            if kept is not None and kept[1] == key and self.clock() - kept[0] < self.refresh:
                return kept[2]
            found = await self._ask_ip(local, self._servers(key[1]))
            self._network = (self.clock(), key, found)
            return found

    def _servers(self, revision: int | None) -> tuple[str, ...]:
        """The real servers' addresses of the running ``revision``, each once, in order."""
        if revision is None:
            return ()
        config = self.store.revision(revision).config
        seen = dict.fromkeys(
            str(server.ip) for vs in config.virtual_services for server in vs.real_servers
        )
        return tuple(seen)

    async def _ask_ip(self, local: str | None, servers: tuple[str, ...]) -> Network:
        try:
            process = await asyncio.create_subprocess_exec(
                *self.ip,
                "-j",
                "-force",
                "-batch",
                "-",
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        except OSError as error:
            return _unknown(local, servers, f"cannot run ip: {_said(error)}")
        try:
            async with asyncio.timeout(IP_TIMEOUT):
                out, err = await process.communicate(batch(servers).encode())
        except TimeoutError:
            process.kill()
            await process.wait()
            return _unknown(local, servers, f"ip did not answer within {IP_TIMEOUT:g} s")
        return network(local, servers, out.decode(errors="replace"), err.decode(errors="replace"))


def _unknown(local: str | None, servers: Sequence[str], why: str) -> Network:
    routes = tuple(Route(server, unknown=why) for server in servers)
    return Network(None, routes, {"mtu": why if local is not None else "this node is in no pair"})


def _said(error: BaseException) -> str:
    return getattr(error, "strerror", None) or str(error) or type(error).__name__


async def drift(facts: Gatherer, view: PairView | None, link: Link | None) -> Comparison | None:
    """This node's settings against the peer's, as ``view`` last heard them; None while the
    node stands alone."""
    if view is None:
        return None
    if view.peer is None:
        return Comparison(unseen="the peer has not been heard yet")
    if view.peer.facts is None:
        return Comparison(unseen="the peer's Balancer does not report its node settings")
    offset = None if link is None else link.offset
    return compare(await facts.gather(), view.peer.facts, offset)
