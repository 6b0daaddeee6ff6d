"""The VIP self-probe (balancer.pair.probe): its ARP frames and neighbour solicitations, which
interfaces it asks on and from which address, and two hosts in network namespaces both holding
an IPv4 and an IPv6 floating IP, each seeing the other's MAC."""

from __future__ import annotations

import json
import sys

from balancer.pair.probe import (
    MINIMUM,
    advertised,
    holding,
    request,
    sender,
    solicitation,
    solicited_node,
)
from tests.appliance import wait_for
from tests.netns import PREFIX, Host, ip, needs_netns, network

VIP = "198.18.1.100"
VIP6 = "2001:db8::100"
MAC = "02:00:00:00:00:11"
ADDRESSES = json.dumps(
    [
        {"ifname": "lo", "ifindex": 1, "link_type": "loopback", "address": "00:00:00:00:00:00",
         "addr_info": [{"family": "inet", "local": "127.0.0.1"}]},
        {"ifname": "eth0", "ifindex": 2, "link_type": "ether", "address": MAC,
         "addr_info": [
             {"family": "inet", "local": "198.18.0.11"},
             {"family": "inet", "local": VIP},
             {"family": "inet6", "local": VIP6},
             {"family": "inet6", "local": "2001:db8::11"},
             {"family": "inet6", "local": "fe80::1", "tentative": True},
             {"family": "inet6", "local": "fe80::11"},
         ]},
        {"ifname": "eth1", "ifindex": 3, "link_type": "ether", "address": "02:00:00:00:00:12",
         "addr_info": [{"family": "inet", "local": "198.19.0.11"},
                       {"family": "inet6", "local": "2001:db8:1::100"}]},
    ]
)  # fmt: skip


def test_an_arp_request_for_the_vip_from_the_node_s_own_address() -> None:
    frame = request(MAC, "198.18.0.11", VIP)
    assert len(frame) == MINIMUM
    assert frame[:6] == b"\xff" * 6  # broadcast
    assert frame[12:14] == b"\x08\x06"
    assert frame[20:22] == b"\x00\x01"  # a request
    assert frame[38:42] == bytes([198, 18, 1, 100])  # whom it asks for
    assert sender(frame) == ("198.18.0.11", MAC)  # whom it speaks for: the node, not the VIP
    assert sender(frame[:30]) is None
    ipv4 = bytearray(frame)
    ipv4[12:14] = b"\x08\x00"
    assert sender(bytes(ipv4)) is None


def test_a_neighbour_solicitation_and_the_advertisement_that_answers_it() -> None:
    asked = solicitation(MAC, VIP6)
    assert asked[0] == 135
    assert asked[8:24] == bytes.fromhex("20010db8000000000000000000000100")
    assert asked[24:] == bytes([1, 1]) + bytes.fromhex("020000000011")  # from this MAC
    assert solicited_node(VIP6) == "ff02::1:ff00:100"
    answer = bytes([136, 0, 0, 0, 0x60, 0, 0, 0]) + asked[8:24]
    other = bytes([2, 1]) + bytes.fromhex("020000000002")
    assert advertised(answer + other) == (VIP6, "02:00:00:00:00:02")
    assert advertised(answer + bytes([1, 1]) + bytes(6) + other) == (VIP6, "02:00:00:00:00:02")
    assert advertised(answer) is None  # no MAC said
    assert advertised(answer + bytes([2, 0]) + bytes(6)) is None  # a bad option ends it
    assert advertised(asked) is None


def test_it_asks_on_the_interfaces_that_hold_a_floating_ip_from_their_own_address() -> None:
    eth0, eth1 = holding(ADDRESSES, [VIP, "198.18.1.101", VIP6, "2001:db8:1::100"])
    assert (eth0.name, eth0.index, eth0.mac) == ("eth0", 2, MAC)
    assert (eth0.own, eth0.own6) == ("198.18.0.11", "fe80::11")  # not one still tentative
    assert eth0.asked == ((VIP,), (VIP6,))
    # eth1 has no link-local address to ask from, and no IPv4 floating IP.
    assert (eth1.own, eth1.own6, eth1.asked) == ("198.19.0.11", "", ((), ()))
    assert holding(ADDRESSES, ["198.18.1.101"]) == []


PROBE = """
import json, sys, uvloop
from balancer.pair.probe import Probe
print(json.dumps(uvloop.run(Probe().probe(sys.argv[1:]))))
"""


def probe(host: Host, *vips: str) -> dict[str, list[str]] | None:
    done = host.run(sys.executable, "-c", PROBE, *vips)
    assert done.returncode == 0, done.stderr
    found: dict[str, list[str]] | None = json.loads(done.stdout)
    return found


def mac(host: Host) -> str:
    return (
        ip("-n", host.name, "-o", "link", "show", "dev", "eth0").split("link/ether")[1].split()[0]
    )


@needs_netns
def test_two_holders_of_a_vip_each_see_the_other_and_a_sole_holder_none() -> None:
    with network() as net:
        a, b = net.host("a", "198.18.0.11"), net.host("b", "198.18.0.12")
        net.host("c", "198.18.0.13")  # a bystander, holding nothing
        for host in (a, b):
            ip("-n", host.name, "addr", "add", f"{VIP}/{PREFIX}", "dev", "eth0")
            ip("-n", host.name, "addr", "add", f"{VIP6}/64", "dev", "eth0", "nodad")
        for host in (a, b):  # the link-local address the solicitation goes from, past its DAD
            wait_for("a link-local address", lambda: _link_local(host))  # noqa: B023
        assert probe(a, VIP, VIP6, "198.18.1.101") == {VIP: [mac(b)], VIP6: [mac(b)]}
        assert probe(b, VIP, VIP6) == {VIP: [mac(a)], VIP6: [mac(a)]}
        for vip, prefix in ((VIP, PREFIX), (VIP6, 64)):
            ip("-n", b.name, "addr", "del", f"{vip}/{prefix}", "dev", "eth0")
        assert probe(a, VIP, VIP6) == {VIP: [], VIP6: []}
        assert probe(b, VIP, VIP6) == {}


def _link_local(host: Host) -> bool:
    shown = ip("-n", host.name, "-6", "-o", "addr", "show", "dev", "eth0", "scope", "link")
    return bool(shown) and "tentative" not in shown
