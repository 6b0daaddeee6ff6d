"""Real server states an operator sets: drain, halt, and weight 0."""

from __future__ import annotations

from typing import Any

import pytest

from balancer.engines import Engine
from tests.backends import Addresses, EchoServer, free_port

from . import (
    Client,
    Revisions,
    landing,
    real_server,
    server_status,
    virtual_service,
    wait_for,
)

SOURCE_IP = {"mode": "source_ip", "timeout": 600}


async def stuck_to(name: str, vip: tuple[str, int], net: Addresses) -> str:
    """A client source address that persistence has tied to real server ``name``."""
    for _ in range(4):
        source = net.ip()
        if await landing(vip, source) == name:
            return source
    raise AssertionError(f"no new client landed on {name}")


@pytest.mark.parametrize(
    ("change", "persistent_stays"),
    [
        pytest.param({"state": "drain"}, True, id="drain"),
        pytest.param({"weight": 0}, True, id="weight-0"),
        pytest.param({"state": "halt"}, False, id="halt"),
    ],
)
async def test_a_server_taken_out_of_rotation(
    engine: Engine, net: Addresses, change: dict[str, Any], persistent_stays: bool
) -> None:
    """Drain and weight 0 turn new clients away but keep persistent ones; halt turns every new
    connection away. None of them cuts an established connection."""
    async with EchoServer("A", net.ip()) as a, EchoServer("B", net.ip()) as b:
        vip = (net.ip(), free_port(net.ip()))
        revisions = Revisions(engine)
        servers = [real_server("A", a.address), real_server("B", b.address)]
        await revisions.apply(virtual_service("rdp", vip, servers, persistence=SOURCE_IP))
        persistent = await stuck_to("A", vip, net)
        held = await Client.open(vip, persistent)
        try:
            assert held.name == "A"

            service = revisions.service("rdp")
            service["real_servers"][0].update(change)
            await revisions.apply(service)
            shown = server_status(await engine.status(), "rdp", "A")
            assert (shown.state, shown.weight) == (
                change.get("state", "online"),
                change.get("weight", 100),
            )

            accepted = a.accepted
            assert [await landing(vip, net.ip()) for _ in range(5)] == ["B"] * 5
            returning = [await landing(vip, persistent) for _ in range(3)]
            assert returning == ["A" if persistent_stays else "B"] * 3
            assert a.accepted == accepted + (3 if persistent_stays else 0)

            await held.roundtrip(b"established connections stay\n")
            await held.roundtrip(bytes(200_000))
            await wait_for(lambda: a.active == 1, what="A keeps only the established connection")
            assert await held.finish() == b""
        finally:
            await held.close()
