"""Drift of node settings, its parts alone: the rules (balancer.ha.drift), reading this node's
facts (balancer.pair.facts: resolv.conf, adjtimex, ``ip -j -batch``'s answers recorded here),
and the peer's facts and clock offset carried by the status route and the link, over the pair's
mutual TLS between two real nodes on loopback (tests/ha/test_link.py's)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter

from balancer.controller import Controller
from balancer.ha.drift import CLOCK_LIMIT, Facts, Offset, Route, compare
from balancer.model import NodeSettings, Pair
from balancer.pair import facts
from balancer.pair.link import Link, Peer
from balancer.pair.pairing import version
from balancer.pair.status import NodeView
from balancer.store import Store
from tests.ha.test_link import PRIMARY, SECONDARY, STEP, Trusts, node, trusts
from tests.webapp import FakeEngine

__all__ = ["trusts"]  # the fixture, from tests/ha/test_link.py

HERE = Facts(
    hostname="lb1",
    system_hostname="lb1",
    resolvers=("10.0.0.53", "10.0.1.53"),
    synchronised=True,
    max_error=0.016,
    wall=1_000.0,
    mtu=1500,
    routes=(
        Route("10.1.0.31", None, "eth1"),
        Route("10.2.0.32", "10.0.0.1", "eth0"),
    ),
    engine="builtin",
    workers=2,
    version="1.0",
)
THERE = dataclasses.replace(HERE, hostname="lb2", system_hostname="lb2")


def differing(this: Facts, peer: Facts, offset: Offset | None = None) -> dict[str, tuple[str, str]]:
    return {row.setting: (row.this, row.peer) for row in compare(this, peer, offset).differences}


# --- the rules ----------------------------------------------------------------------------------


def test_two_nodes_set_alike_but_for_their_names_agree() -> None:
    compared = compare(HERE, THERE, Offset(0.2, 0.001))
    assert compared.unseen is None
    assert compared.differences == ()
    settings = [row.setting for row in compared.rows]
    assert settings == [
        "hostname", "DNS resolvers", "time synchronisation", "clock offset", "MTU",
        "route to 10.1.0.31", "route to 10.2.0.32", "engine", "workers", "Balancer version",
    ]  # fmt: skip
    assert all(row.why for row in compared.rows)


def test_the_same_hostname_on_both_nodes_is_the_difference() -> None:
    assert differing(HERE, dataclasses.replace(THERE, hostname="LB1")) == {
        "hostname": ("lb1", "LB1")
    }
    # The system's, shown apart only where it is not the setting's.
    assert differing(HERE, dataclasses.replace(THERE, system_hostname="lb1")) == {
        "system hostname": ("lb1", "lb1")
    }


@pytest.mark.parametrize(
    ("change", "setting", "shown"),
    [
        ({"resolvers": ("10.0.1.53", "10.0.0.53")}, "DNS resolvers", "10.0.1.53, 10.0.0.53"),
        ({"resolvers": ()}, "DNS resolvers", "none"),
        ({"mtu": 9000}, "MTU", "9000"),
        ({"engine": "haproxy"}, "engine", "haproxy"),
        ({"workers": 4}, "workers", "4"),
        ({"version": "1.1"}, "Balancer version", "1.1"),
        ({"synchronised": False, "max_error": None}, "time synchronisation", "not synchronised"),
    ],
)
def test_each_setting_set_otherwise_on_the_peer_is_a_difference(
    change: dict[str, Any], setting: str, shown: str
) -> None:
    found = differing(HERE, dataclasses.replace(THERE, **change))
    assert list(found) == [setting]
    assert found[setting][1] == shown


def test_time_must_be_synchronised_on_both_even_if_alike() -> None:
    unsynced = {"synchronised": False, "max_error": None}
    found = differing(dataclasses.replace(HERE, **unsynced), dataclasses.replace(THERE, **unsynced))
    assert found == {"time synchronisation": ("not synchronised", "not synchronised")}
    assert differing(HERE, THERE) == {}
    row = compare(HERE, THERE, None).rows[2]
    assert row.this == "synchronised (max error 16 ms)"


def test_a_clock_offset_beyond_a_second_less_its_uncertainty_is_drift() -> None:
    assert differing(HERE, THERE, Offset(CLOCK_LIMIT + 0.05, 0.1)) == {}
    assert differing(HERE, THERE, Offset(-(CLOCK_LIMIT + 0.2), 0.1)) == {
        "clock offset": ("this node's clock", "1.200 s behind (± 0.100 s)")
    }
    assert differing(HERE, THERE, Offset(3.25, 0.002)) == {
        "clock offset": ("this node's clock", "3.250 s ahead (± 0.002 s)")
    }
    # Not measured (an older peer): no row rather than a guess.
    assert "clock offset" not in [row.setting for row in compare(HERE, THERE, None).rows]


def test_routes_compare_the_gateway_not_the_interfaces_name() -> None:
    renamed = (Route("10.1.0.31", None, "ens4"), Route("10.2.0.32", "10.0.0.1", "ens3"))
    assert differing(HERE, dataclasses.replace(THERE, routes=renamed)) == {}
    other = (Route("10.1.0.31", "10.0.0.1", "ens3"), Route("10.2.0.32", "10.0.0.2", "ens3"))
    assert differing(HERE, dataclasses.replace(THERE, routes=other)) == {
        "route to 10.1.0.31": ("on-link (eth1)", "via 10.0.0.1 (ens3)"),
        "route to 10.2.0.32": ("via 10.0.0.1 (eth0)", "via 10.0.0.2 (ens3)"),
    }
    # A server only one node runs (a revision not there yet) is not compared.
    fewer = dataclasses.replace(THERE, routes=HERE.routes[:1])
    assert [row.setting for row in compare(HERE, fewer, None).rows if "route" in row.setting] == [
        "route to 10.1.0.31"
    ]


def test_what_a_node_cannot_see_is_unknown_and_marked() -> None:
    blind = dataclasses.replace(
        THERE,
        resolvers=None,
        mtu=None,
        synchronised=None,
        routes=(Route("10.1.0.31", unknown="no route: Network is unreachable"), HERE.routes[1]),
        unknown={
            "resolvers": "cannot read /etc/resolv.conf: Permission denied",
            "mtu": "no interface has 10.0.0.12",
            "synchronised": "adjtimex: Operation not permitted",
        },
    )
    assert differing(HERE, blind) == {
        "DNS resolvers": ("10.0.0.53, 10.0.1.53", "unknown: cannot read /etc/resolv.conf: "
                          "Permission denied"),
        "time synchronisation": ("synchronised (max error 16 ms)",
                                 "unknown: adjtimex: Operation not permitted"),
        "MTU": ("1500", "unknown: no interface has 10.0.0.12"),
        "route to 10.1.0.31": ("on-link (eth1)", "unknown: no route: Network is unreachable"),
    }  # fmt: skip


def test_workers_are_compared_only_between_built_in_engines() -> None:
    haproxy = dataclasses.replace(HERE, engine="haproxy", workers=1)
    settings = [
        row.setting
        for row in compare(haproxy, dataclasses.replace(THERE, engine="haproxy"), None).rows
    ]
    assert "workers" not in settings
    assert "engine" in settings


def test_a_peer_that_reports_nothing_is_not_compared() -> None:
    compared = compare(HERE, None, None)
    assert (compared.rows, compared.unseen) == ((), "the peer has not reported its node settings")


# --- reading this node's facts -----------------------------------------------------------------

# `ip -j -force -batch -` given "address show" and three "route get" (recorded on Debian 12):
# the second server has no route.
IP_OUT = "\n".join(
    [
        json.dumps(
            [
                {"ifindex": 1, "ifname": "lo", "mtu": 65536,
                 "addr_info": [{"family": "inet", "local": "127.0.0.1", "prefixlen": 8}]},
                {"ifindex": 2, "ifname": "eth0", "mtu": 1400,
                 "addr_info": [{"family": "inet", "local": "198.18.0.11", "prefixlen": 15},
                               {"family": "inet6", "local": "2001:db8::11", "prefixlen": 64}]},
            ]
        ),
        '[{"dst":"198.18.0.31","dev":"eth0","prefsrc":"198.18.0.11","flags":[],"uid":0,"cache":[]}]',
        '[{"dst":"2001:db8:2::32","gateway":"2001:db8::1","dev":"eth0","prefsrc":"2001:db8::11",'
        '"flags":[],"uid":0,"cache":[]}]',
    ]
)  # fmt: skip
IP_ERR = "RTNETLINK answers: Network is unreachable\nCommand failed -:3\n"
SERVERS = ("198.18.0.31", "10.9.9.9", "2001:db8:2:0::32")


def test_ip_says_the_mtu_of_the_pairs_interface_and_each_route() -> None:
    assert facts.batch(SERVERS) == (
        "address show\nroute get 198.18.0.31\nroute get 10.9.9.9\nroute get 2001:db8:2:0::32\n"
    )
    found = facts.network("198.18.0.11", SERVERS, IP_OUT, IP_ERR)
    assert found.mtu == 1400
    assert found.routes == (
        Route("198.18.0.31", None, "eth0"),
        Route("10.9.9.9", unknown="no route: RTNETLINK answers: Network is unreachable"),
        Route("2001:db8:2:0::32", "2001:db8::1", "eth0"),
    )
    assert found.unknown == {}
    assert facts.network("2001:db8:0::11", (), IP_OUT, "").mtu == 1400


def test_what_ip_cannot_say_is_unknown_with_why() -> None:
    assert facts.network("198.18.0.99", (), IP_OUT, "").unknown == {
        "mtu": "no interface has 198.18.0.99"
    }
    assert facts.network(None, (), IP_OUT, "").unknown == {"mtu": "this node is in no pair"}
    failed = facts.network("198.18.0.11", ("10.9.9.9",), "", "Cannot talk\nCommand failed -:1\n")
    assert failed.unknown == {"mtu": "ip address: Cannot talk"}
    assert failed.routes == (Route("10.9.9.9", unknown="no route: ip did not say"),)


def test_resolv_conf_nameservers_in_order() -> None:
    text = "# made by hand\nsearch example.test\nnameserver 10.0.0.53\noptions ndots:2\n"
    assert facts.resolvers(text + "nameserver  2001:db8::53 \nnameserver\n") == (
        "10.0.0.53",
        "2001:db8::53",
    )
    assert facts.resolvers("") == ()


def test_the_kernels_clock_state() -> None:
    # adjtimex(2): 0 TIME_OK; 5 TIME_ERROR; STA_UNSYNC 0x40 (STA_NANO 0x2000 beside it).
    assert facts.synchronised(0, 0x2001, 16_000) == (True, 0.016)
    assert facts.synchronised(0, 0x2040, 16_000) == (False, None)
    assert facts.synchronised(5, 0x2000, 16_000_000) == (False, None)
    state, status, max_error = facts.kernel_clock()  # the real call answers, whatever it says
    assert state >= 0
    assert max_error >= 0
    assert isinstance(status, int)


def gatherer(tmp_path: Path, store: Store, **options: Any) -> facts.Gatherer:
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 10.0.0.53\n")
    return facts.Gatherer(store, Controller(store, FakeEngine()), resolv_conf=resolv, **options)


def test_this_nodes_facts_and_ip_asked_at_most_every_few_seconds(tmp_path: Path) -> None:
    ran = tmp_path / "ran"
    ip = tmp_path / "ip"
    ip.write_text(
        f"#!/bin/sh\necho run >> {ran}\ncat > /dev/null\necho '{IP_OUT.splitlines()[0]}'\n"
    )
    ip.chmod(0o755)
    now = [0.0]
    with Store(tmp_path / "balancer.db") as store:
        pair = Pair(role="primary", local_address="198.18.0.11", peer_address="198.18.0.12")  # type: ignore[arg-type]
        store.save_node_settings(NodeSettings(hostname="lb1", workers=3, pair=pair), author="test")
        found = gatherer(
            tmp_path, store, ip=[str(ip)], kernel=lambda: (0, 1, 2000), clock=lambda: now[0],
            wall=lambda: 1234.5,
        )  # fmt: skip

        async def asked() -> Facts:
            return await found.gather()

        first = asyncio.run(asked())
        assert (first.hostname, first.resolvers, first.synchronised, first.max_error) == (
            "lb1", ("10.0.0.53",), True, 0.002,
        )  # fmt: skip
        assert (first.mtu, first.routes, first.engine, first.workers) == (1400, (), "fake", 3)
        assert (first.wall, first.version, first.unknown) == (1234.5, version(), {})
        now[0] += facts.REFRESH / 2
        asyncio.run(asked())
        assert ran.read_text().count("run") == 1
        now[0] += facts.REFRESH
        asyncio.run(asked())
        assert ran.read_text().count("run") == 2


def test_a_missing_ip_or_resolv_conf_is_unknown_not_a_traceback(tmp_path: Path) -> None:
    with Store(tmp_path / "balancer.db") as store:
        found = gatherer(tmp_path, store, ip=[str(tmp_path / "no-ip")], kernel=_denied)
        found.resolv_conf = tmp_path / "none"
        said = asyncio.run(found.gather())
    assert said.mtu is None
    assert said.resolvers is None
    assert said.synchronised is None
    assert said.unknown["resolvers"].startswith(f"cannot read {tmp_path / 'none'}: ")
    assert said.unknown["synchronised"] == "adjtimex: not permitted"
    assert said.unknown["mtu"] == "this node is in no pair"


def test_an_ip_that_hangs_is_given_up_and_unknown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ip = tmp_path / "ip"
    ip.write_text("#!/bin/sh\nexec sleep 30\n")
    ip.chmod(0o755)
    monkeypatch.setattr(facts, "IP_TIMEOUT", 0.2)
    with Store(tmp_path / "balancer.db") as store:
        pair = Pair(role="primary", local_address="198.18.0.11", peer_address="198.18.0.12")  # type: ignore[arg-type]
        store.save_node_settings(NodeSettings(pair=pair), author="test")
        said = asyncio.run(gatherer(tmp_path, store, ip=[str(ip)]).gather())
    assert (said.mtu, said.unknown["mtu"]) == (None, "ip did not answer within 0.2 s")


def _denied() -> tuple[int, int, int]:
    raise OSError("adjtimex: not permitted")


# --- carried to the peer -------------------------------------------------------------------------


def test_the_peers_status_carries_its_facts_and_the_link_measures_the_offset(
    tmp_path: Path, trusts: Trusts
) -> None:
    async def scenario() -> None:
        async with contextlib.AsyncExitStack() as running:
            secondary = await running.enter_async_context(
                node(tmp_path / "secondary", SECONDARY, trusts.secondary, PRIMARY, "secondary")
            )
            peer = Peer(trusts.primary, SECONDARY, secondary.port)
            running.push_async_callback(peer.aclose)
            link = Link(peer, interval=STEP)
            await link.ask()
            assert link.view is not None
            assert link.view.facts is not None
            said = link.view.facts
            assert (said.engine, said.version) == ("fake", version())
            assert said.unknown["mtu"] == "no interface has 127.0.0.2"  # lo has 127.0.0.1/8
            # Both nodes read one clock: the offset is within what the round trip leaves open.
            assert link.offset is not None
            assert abs(link.offset.seconds) <= link.offset.uncertainty
            # A wall clock 5 s behind this node's: the peer is 5 s ahead, give or take.
            link.wall = lambda: time.time() - 5
            await link.ask()
            assert abs(link.offset.seconds - 5) <= link.offset.uncertainty

    asyncio.run(scenario())


def test_an_older_peers_status_without_facts_is_still_understood() -> None:
    answer = {
        "address": "198.18.0.2", "role": "secondary", "state": "passive", "revision": 3,
        "engine": "builtin", "engine_error": None, "sync": "in sync",
    }  # fmt: skip
    view = TypeAdapter(NodeView).validate_python(answer)
    assert view.facts is None
    carried = TypeAdapter(NodeView).validate_python(
        {**answer, "facts": json.loads(json.dumps(dataclasses.asdict(HERE)))}
    )
    assert carried.facts == HERE
