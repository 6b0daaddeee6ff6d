"""The VIP self-probe: who else answers for the floating IPs this node holds.

For each floating IP this node holds, on the interface that holds it, the probe asks who has
it and listens for ``WINDOW`` s: an IPv4 one by an ARP request from the node's own address on
that interface, an IPv6 one by a neighbour solicitation from the interface's link-local address
(so nobody's cache learns a floating IP from the question, and the answer comes back here).
This node's kernel does not answer its own question, so any answer for the floating IP from
another MAC is another holder: the peer, in a split brain. A gratuitous ARP for it from another
MAC heard meanwhile counts too.

The messages are pure (``request``, ``sender``, ``solicitation``, ``advertised``); the I/O is
an AF_PACKET socket for ARP and a raw ICMPv6 socket (root only), read without blocking on the
event loop, bounded in time and in messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import socket
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from balancer import tool

log = logging.getLogger(__name__)

WINDOW = 0.2  # s: a host on the same segment answers ARP within milliseconds
FRAMES = 256  # at most this many frames read in one window (ARP from the whole segment)
IP_TIMEOUT = 5.0
ETH_P_ARP = 0x0806
ETH_P_IP = 0x0800
PACKET_OUTGOING = 4  # AF_PACKET's pkttype for a frame this host sent
BROADCAST = b"\xff" * 6
NS, NA = 135, 136  # ICMPv6 neighbour solicitation and advertisement
ICMP6_FILTER = 1  # the ICMPv6 socket option (RFC 3542) Python does not name
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


def solicitation(mac: str, target: str) -> bytes:
    """An ICMPv6 neighbour solicitation for ``target`` from ``mac`` (the kernel fills in the
    checksum of a raw ICMPv6 socket's messages)."""
    own = bytes.fromhex(mac.replace(":", ""))
    target_address = ipaddress.IPv6Address(target).packed
    return bytes([NS, 0, 0, 0, 0, 0, 0, 0]) + target_address + bytes([1, 1]) + own


def advertised(message: bytes) -> tuple[str, str] | None:
    """The address and MAC an ICMPv6 neighbour advertisement speaks for (its target, and its
    target link-layer address option); None for any other message, or one without the MAC."""
    if len(message) < 24 or message[0] != NA:
        return None
    target = str(ipaddress.IPv6Address(message[8:24]))
    at = 24
    for _ in range(16):  # options, each a multiple of 8 bytes; few in an advertisement
        if at + 8 > len(message) or message[at + 1] == 0:
            return None
        if message[at] == 2:  # the target link-layer address
            return target, ":".join(f"{byte:02x}" for byte in message[at + 2 : at + 8])
        at += message[at + 1] * 8
    return None


def solicited_node(address: str) -> str:
    """The multicast group a neighbour solicitation for ``address`` goes to (RFC 4291)."""
    low = ipaddress.IPv6Address(address).packed[-3:]
    return str(ipaddress.IPv6Address(bytes.fromhex("ff02" + "00" * 9 + "01ff") + low))


@dataclass(frozen=True)
class Interface:
    """An interface that holds floating IPs: its name, index and MAC, this node's own addresses
    on it that the probe sends from (IPv4, and IPv6 link-local; "" where there is none) and the
    floating IPs it holds."""

    name: str
    index: int
    mac: str
    own: str
    own6: str
    vips: tuple[str, ...]

    @property
    def asked(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The IPv4 and the IPv6 floating IPs it can ask for: those it has an address of its
        own to ask from."""
        four = tuple(v for v in self.vips if ":" not in v) if self.own else ()
        six = tuple(v for v in self.vips if ":" in v) if self.own6 else ()
        return four, six


def holding(addresses: str, vips: Iterable[str]) -> list[Interface]:
    """The Ethernet interfaces that hold any of ``vips``, from ``ip -j address show``."""
    wanted = {ipaddress.ip_address(vip) for vip in vips}
    found = []
    for link in json.loads(addresses):
        held: list[str] = []
        own = {"inet": "", "inet6": ""}
        for info in link.get("addr_info", ()):
            family = info.get("family")
            if family not in own:
                continue
            address = ipaddress.ip_address(info["local"])
            if address in wanted:
                held.append(str(address))
            elif (
                not own[family]
                and not info.get("tentative")
                and (family == "inet" or address.is_link_local)
            ):
                own[family] = str(address)
        mac = link.get("address", "")
        if held and len(mac) == 17 and link.get("link_type") == "ether":
            found.append(
                Interface(link["ifname"], link["ifindex"], mac, own["inet"], own["inet6"],
                          tuple(held))
            )  # fmt: skip
    return found


class Probe:
    """Asks the segment who answers for the floating IPs this node holds. ``wrap`` goes before
    the ``ip`` command (tests)."""

    def __init__(self, window: float = WINDOW, wrap: Sequence[str] = ()) -> None:
        self.window = window
        self.wrap = list(wrap)
        self.error: str | None = None  # why the last probe could not run; None once it did

    async def probe(self, vips: Iterable[str]) -> dict[str, tuple[str, ...]] | None:
        """Each floating IP of ``vips`` this node holds -> the other MACs that answered for
        it (none: only this node holds it); None if the probe cannot run."""
        try:
            status, output = await tool.run([*self.wrap, "ip", "-j", "address", "show"], IP_TIMEOUT)
            if status != 0:
                raise OSError(f"ip address show failed: {output.strip()[:200]}")
            asks = []
            for interface in holding(output, vips):
                four, six = interface.asked
                if four:
                    asks.append(self._arp(interface, four))
                if six:
                    asks.append(self._neighbour(interface, six))
            found: dict[str, tuple[str, ...]] = {}
            for answered in await asyncio.gather(*asks):
                found.update(answered)
        except (OSError, ValueError, TimeoutError) as error:
            why = str(error) or type(error).__name__
            if why != self.error:  # said once, not every second
                log.warning("VIP self-probe: %s", why, extra={"event": "probe_failed"})
            self.error = why
            return None
        self.error = None
        return found

    async def _arp(self, interface: Interface, vips: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP)) as raw:
            raw.bind((interface.name, ETH_P_ARP))
            raw.setblocking(False)
            for vip in vips:
                raw.send(request(interface.mac, interface.own, vip))

            def heard(frame: bytes, where: Any) -> tuple[str, str] | None:
                return None if where[2] == PACKET_OUTGOING else sender(frame)

            return await self._listen(raw, interface.mac, vips, heard)

    async def _neighbour(
        self, interface: Interface, vips: tuple[str, ...]
    ) -> dict[str, tuple[str, ...]]:
        with socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6) as raw:
            # Only advertisements: a filter's set bits block (RFC 3542).
            blocked = [0xFFFFFFFF] * 8
            blocked[NA >> 5] &= ~(1 << (NA & 31))
            raw.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER, struct.pack("=8I", *blocked))
            raw.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)  # RFC 4861
            raw.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
            # From the link-local address: an answer to a floating IP would stay on its holder.
            raw.bind((interface.own6, 0, 0, interface.index))
            raw.setblocking(False)
            for vip in vips:
                message = solicitation(interface.mac, vip)
                raw.sendto(message, (solicited_node(vip), 0, 0, interface.index))

            def heard(message: bytes, _: Any) -> tuple[str, str] | None:
                return advertised(message)

            return await self._listen(raw, interface.mac, vips, heard)

    async def _listen(
        self,
        raw: socket.socket,
        mac: str,
        vips: tuple[str, ...],
        heard: Callable[[bytes, Any], tuple[str, str] | None],
    ) -> dict[str, tuple[str, ...]]:
        """For ``window`` s, each of ``vips`` -> the MACs other than ``mac`` that ``heard``
        finds speaking for it in what ``raw`` receives."""
        others: dict[str, set[str]] = {vip: set() for vip in vips}
        loop = asyncio.get_running_loop()
        readable = asyncio.Event()
        # Read by hand when readable: uvloop, which the daemon runs, has no sock_recvfrom.
        loop.add_reader(raw.fileno(), readable.set)
        try:
            deadline = loop.time() + self.window
            for _ in range(FRAMES):
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    received, where = raw.recvfrom(2048)
                except BlockingIOError:
                    readable.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(left):
                            await readable.wait()
                    continue
                said = heard(received, where)
                if said is not None and said[0] in others and said[1] != mac:
                    others[said[0]].add(said[1])
        finally:
            loop.remove_reader(raw.fileno())
        return {vip: tuple(sorted(macs)) for vip, macs in others.items()}
