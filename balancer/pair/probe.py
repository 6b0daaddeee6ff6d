"""The VIP self-probe: who else answers for the floating IPs this node holds.

For each IPv4 floating IP this node holds, on the interface that holds it, the probe sends an
ARP request for it (from the node's own address on that interface, so nobody's cache learns a
floating IP from it) and listens for ``WINDOW`` s. This node's own kernel does not answer a
frame it sent itself, so any answer for the floating IP from another MAC is another holder:
the peer, in a split brain. A gratuitous ARP for it from another MAC heard meanwhile counts too.

The frames are pure (``request``, ``sender``); the I/O is an AF_PACKET raw socket (root only),
read without blocking on the event loop, bounded in time and in frames. IPv6 floating IPs
(neighbour solicitation) are not probed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import socket
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from balancer import tool

log = logging.getLogger(__name__)

WINDOW = 0.2  # s: a host on the same segment answers ARP within milliseconds
FRAMES = 256  # at most this many frames read in one window (ARP from the whole segment)
IP_TIMEOUT = 5.0
ETH_P_ARP = 0x0806
ETH_P_IP = 0x0800
PACKET_OUTGOING = 4  # AF_PACKET's pkttype for a frame this host sent
BROADCAST = b"\xff" * 6
_ARP = struct.Struct("!6s6sHHHBBH6s4s6s4s")  # Ethernet header, then ARP for IPv4 over Ethernet
MINIMUM = 60  # an Ethernet frame's least length, without its checksum


def request(mac: str, sender: str, target: str) -> bytes:
    """A broadcast ARP request for ``target`` from ``sender`` at ``mac``."""
    own = bytes.fromhex(mac.replace(":", ""))
    frame = _ARP.pack(
        BROADCAST, own, ETH_P_ARP, 1, ETH_P_IP, 6, 4, 1,
        own, ipaddress.IPv4Address(sender).packed, bytes(6), ipaddress.IPv4Address(target).packed,
    )  # fmt: skip
    return frame.ljust(MINIMUM, b"\0")


def sender(frame: bytes) -> tuple[str, str] | None:
    """The IPv4 address and MAC an ARP frame (request, reply or gratuitous) speaks for; None
    for any other frame."""
    if len(frame) < _ARP.size:
        return None
    fields = _ARP.unpack_from(frame)
    ethertype, hardware, protocol, hlen, plen, _, sha, spa = fields[2:10]
    if (ethertype, hardware, protocol, hlen, plen) != (ETH_P_ARP, 1, ETH_P_IP, 6, 4):
        return None
    return str(ipaddress.IPv4Address(spa)), ":".join(f"{byte:02x}" for byte in sha)


@dataclass(frozen=True)
class Interface:
    """An interface that holds floating IPs: its name, its MAC, this node's own address on it
    (the requests' sender) and the floating IPs it holds."""

    name: str
    mac: str
    own: str
    vips: tuple[str, ...]


def holding(addresses: str, vips: Iterable[str]) -> list[Interface]:
    """The interfaces that hold any of the IPv4 ``vips``, from ``ip -j address show``; one
    with no address of its own to send from is left out."""
    wanted = {ipaddress.ip_address(vip) for vip in vips}
    found = []
    for link in json.loads(addresses):
        held: list[str] = []
        own: list[str] = []
        for info in link.get("addr_info", ()):
            if info.get("family") != "inet":
                continue
            address = ipaddress.ip_address(info["local"])
            (held if address in wanted else own).append(str(address))
        mac = link.get("address", "")
        if held and own and len(mac) == 17 and link.get("link_type") == "ether":
            found.append(Interface(link["ifname"], mac, own[0], tuple(held)))
    return found


class Probe:
    """Asks the segment who answers for the floating IPs this node holds. ``wrap`` goes before
    the ``ip`` command (tests)."""

    def __init__(self, window: float = WINDOW, wrap: Sequence[str] = ()) -> None:
        self.window = window
        self.wrap = list(wrap)
        self.error: str | None = None  # why the last probe could not run; None once it did

    async def probe(self, vips: Iterable[str]) -> dict[str, tuple[str, ...]] | None:
        """Each IPv4 floating IP of ``vips`` this node holds -> the other MACs that answered
        for it (none: only this node holds it); None if the probe cannot run."""
        try:
            status, output = await tool.run([*self.wrap, "ip", "-j", "address", "show"], IP_TIMEOUT)
            if status != 0:
                raise OSError(f"ip address show failed: {output.strip()[:200]}")
            interfaces = holding(output, vips)
            found: dict[str, tuple[str, ...]] = {}
            for answered in await asyncio.gather(*(self._ask(i) for i in interfaces)):
                found.update(answered)
        except (OSError, ValueError, TimeoutError) as error:
            why = str(error) or type(error).__name__
            if why != self.error:  # said once, not every second
                log.warning("VIP self-probe: %s", why, extra={"event": "probe_failed"})
            self.error = why
            return None
        self.error = None
        return found

    async def _ask(self, interface: Interface) -> dict[str, tuple[str, ...]]:
        others: dict[str, set[str]] = {vip: set() for vip in interface.vips}
        loop = asyncio.get_running_loop()
        readable = asyncio.Event()
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP)) as raw:
            raw.bind((interface.name, ETH_P_ARP))
            raw.setblocking(False)
            # Read by hand when readable: uvloop, which the daemon runs, has no sock_recvfrom.
            loop.add_reader(raw.fileno(), readable.set)
            try:
                for vip in interface.vips:
                    raw.send(request(interface.mac, interface.own, vip))
                deadline = loop.time() + self.window
                for _ in range(FRAMES):
                    left = deadline - loop.time()
                    if left <= 0:
                        break
                    try:
                        frame, where = raw.recvfrom(2048)
                    except BlockingIOError:
                        readable.clear()
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(left):
                                await readable.wait()
                        continue
                    said = sender(frame)
                    if where[2] == PACKET_OUTGOING or said is None:
                        continue
                    address, mac = said
                    if address in others and mac != interface.mac:
                        others[address].add(mac)
            finally:
                loop.remove_reader(raw.fileno())
        return {vip: tuple(sorted(macs)) for vip, macs in others.items()}
