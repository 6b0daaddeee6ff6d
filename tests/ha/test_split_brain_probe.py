"""The VIP self-probe (balancer.pair.probe): its ARP frames, which interfaces it asks on, and
two hosts in network namespaces both holding a floating IP, each seeing the other's MAC."""

from __future__ import annotations

import json
import sys

from balancer.pair.probe import MINIMUM, holding, request, sender
from tests.netns import PREFIX, Host, ip, needs_netns, network

VIP = "198.18.1.100"
MAC = "02:00:00:00:00:11"
ADDRESSES = json.dumps(
    [
        {"ifname": "lo", "link_type": "loopback", "address": "00:00:00:00:00:00",
         "addr_info": [{"family": "inet", "local": "127.0.0.1"}]},
        {"ifname": "eth0", "link_type": "ether", "address": MAC,
         "addr_info": [
             {"family": "inet", "local": "198.18.0.11"},
             {"family": "inet", "local": VIP},
             {"family": "inet6", "local": "2001:db8::10"},
         ]},
        {"ifname": "eth1", "link_type": "ether", "address": "02:00:00:00:00:12",
         "addr_info": [{"family": "inet", "local": "198.19.0.11"}]},
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


def test_it_asks_on_the_interfaces_that_hold_an_ipv4_floating_ip() -> None:
    (eth0,) = holding(ADDRESSES, [VIP, "198.18.1.101", "2001:db8::10"])
    assert (eth0.name, eth0.mac, eth0.own, eth0.vips) == ("eth0", MAC, "198.18.0.11", (VIP,))
    assert holding(ADDRESSES, ["198.18.1.101"]) == []


# On uvloop, as the daemon runs it.
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
        assert probe(a, VIP, "198.18.1.101", "2001:db8::10") == {VIP: [mac(b)]}
        assert probe(b, VIP) == {VIP: [mac(a)]}
        ip("-n", b.name, "addr", "del", f"{VIP}/{PREFIX}", "dev", "eth0")
        assert probe(a, VIP) == {VIP: []}
        assert probe(b, VIP) == {}
