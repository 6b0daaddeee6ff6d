"""The appliance's figures: /proc's text parsed, and bandwidth as a rate between two reads."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from balancer.system import MIN_INTERVAL, NetRead, System, parse_meminfo, parse_net_dev, rates

NET_DEV = """\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo: 437674969166 12587972    0    0    0     0          0         0 437674969166 12587972    0    0    0     0       0          0
  eth0: 427043235   25331    0    0    0     0          0         0  1564035   15400    0    0    0     0       0          0
"""  # noqa: E501  (recorded from a Debian 12 kernel)

MEMINFO = """\
MemTotal:       24684084 kB
MemFree:        23702808 kB
MemAvailable:   23901296 kB
Buffers:            7304 kB
Cached:           359188 kB
SwapTotal:       1048572 kB
SwapFree:         524286 kB
HugePages_Total:       0
"""


def test_net_dev_gives_each_interfaces_bytes_received_and_sent() -> None:
    assert parse_net_dev(NET_DEV) == {
        "lo": (437674969166, 437674969166),
        "eth0": (427043235, 1564035),
    }


def test_a_net_dev_line_that_is_not_counters_is_named() -> None:
    with pytest.raises(ValueError, match=r"/proc/net/dev line 3: not 16 counters: 'eth0: 12 x'"):
        parse_net_dev(NET_DEV.splitlines()[0] + "\n" + NET_DEV.splitlines()[1] + "\n eth0: 12 x\n")


def test_meminfo_in_bytes() -> None:
    memory = parse_meminfo(MEMINFO)
    assert memory.total == 24684084 * 1024
    assert memory.available == 23901296 * 1024
    assert memory.used == (24684084 - 23901296) * 1024
    assert (memory.swap_total, memory.swap_free) == (1048572 * 1024, 524286 * 1024)


def test_meminfo_without_memavailable_counts_caches_as_free_does() -> None:
    old = "\n".join(line for line in MEMINFO.splitlines() if "MemAvailable" not in line)
    assert parse_meminfo(old).available == (23702808 + 7304 + 359188) * 1024


def test_meminfo_that_is_not_meminfo_is_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match=r"/proc/meminfo: no MemTotal, MemFree"):
        parse_meminfo("Cached: 12 kB\n")
    with pytest.raises(ValueError, match=r"line 2: not a size: 'MemFree: lots'"):
        parse_meminfo("MemTotal: 12 kB\nMemFree: lots\n")


def test_rates_are_bytes_per_second_and_skip_a_counter_that_went_back() -> None:
    before = NetRead(10.0, {"eth0": (1000, 500), "eth1": (9000, 9000), "gone": (1, 1)})
    after = NetRead(12.0, {"eth0": (5000, 700), "eth1": (10, 20), "new": (3, 3)})
    assert rates(before, after) == {"eth0": (2000.0, 100.0)}


class FakeProc:
    """A /proc with files the test writes, and a clock it moves."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "net").mkdir()
        (root / "meminfo").write_text(MEMINFO)
        self.now = 100.0

    def counters(self, rx: int, tx: int) -> None:
        header = "\n".join(NET_DEV.splitlines()[:2])
        zeros = " ".join(["0"] * 7)
        (self.root / "net" / "dev").write_text(f"{header}\n  eth0: {rx} {zeros} {tx} {zeros}\n")


def test_bandwidth_is_the_rate_between_reads_at_least_a_second_apart(tmp_path: Path) -> None:
    proc = FakeProc(tmp_path)
    system = System(tmp_path, clock=lambda: proc.now, load=lambda: (0.5, 0.25, 0.125))
    proc.counters(1000, 2000)
    first = system.figures()
    assert first.problems == ()
    assert first.interfaces[0].model_dump() == {
        "name": "eth0",
        "rx_bytes": 1000,
        "tx_bytes": 2000,
        "rx_rate": None,  # one read is no rate
        "tx_rate": None,
    }
    assert first.load is not None
    assert first.load.five == 0.25
    assert first.load.cpus == os.cpu_count()
    assert first.memory == parse_meminfo(MEMINFO)

    proc.now += 2.0
    proc.counters(5000, 2200)
    second = system.figures().interfaces[0]
    assert (second.rx_rate, second.tx_rate) == (2000.0, 100.0)

    # Too soon after: the totals move, the rate stays the last whole interval's.
    proc.now += MIN_INTERVAL / 10
    proc.counters(9000, 2200)
    soon = system.figures().interfaces[0]
    assert (soon.rx_bytes, soon.rx_rate, soon.tx_rate) == (9000, 2000.0, 100.0)

    proc.now += MIN_INTERVAL
    later = system.figures().interfaces[0]
    assert later.rx_rate == pytest.approx(4000 / (MIN_INTERVAL * 1.1))


def test_a_figure_that_cannot_be_read_is_left_out_with_the_reason(tmp_path: Path) -> None:
    proc = FakeProc(tmp_path)

    def no_load() -> tuple[float, float, float]:
        raise OSError("Load average is unobtainable")

    figures = System(tmp_path, clock=lambda: proc.now, load=no_load).figures()
    assert figures.interfaces == ()
    assert figures.load is None
    assert figures.memory is not None
    assert figures.problems[0].startswith("network bandwidth: [Errno 2] No such file")
    assert figures.problems[1] == "load average: Load average is unobtainable"


def test_this_machines_figures_read() -> None:
    figures = System().figures()
    assert figures.problems == ()
    assert "lo" in {interface.name for interface in figures.interfaces}
    assert figures.memory is not None
    assert 0 < figures.memory.available <= figures.memory.total
