"""Commits: a new revision never drops a connection; a revision the engine cannot run is
rejected and the running one stays."""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import Callable

import pytest

from balancer.engines import Engine, EngineRejected
from tests.backends import Addresses, EchoServer, free_port

from . import (
    FAST_CHECK,
    Client,
    Document,
    Revisions,
    landing,
    real_server,
    service_status,
    virtual_service,
    wait_for,
)

CONNECTIONS = 20


async def keep_talking(client: Client, stop: asyncio.Event, seed: int) -> int:
    """Round trips of assorted sizes on ``client`` until ``stop``; returns how many."""
    rng = random.Random(seed)
    count = 0
    while not stop.is_set():
        await client.roundtrip(rng.randbytes(rng.choice([1, 100, 4096, 65536, 300_000])))
        count += 1
        await asyncio.sleep(0.01)
    return count


async def test_commits_drop_no_connection(engine: Engine, net: Addresses) -> None:
    async with (
        EchoServer("A", net.ip()) as a,
        EchoServer("B", net.ip()) as b,
        EchoServer("C", net.ip()) as c,
    ):
        vip_ip = net.ip()
        vip = (vip_ip, free_port(vip_ip))
        check = {"type": "connect", **FAST_CHECK}
        ra, rb, rc = (real_server(s.name, s.address) for s in (a, b, c))
        revisions = Revisions(engine)
        await revisions.apply(virtual_service("rdp", vip, [ra, rb], health_check=check))

        clients = [await Client.open(vip) for _ in range(CONNECTIONS)]
        stop = asyncio.Event()
        try:
            on_a = [client for client in clients if client.name == "A"]
            assert 0 < len(on_a) < CONNECTIONS
            talkers = [
                asyncio.create_task(keep_talking(client, stop, seed))
                for seed, client in enumerate(clients)
            ]
            second_port = free_port(vip_ip)
            changes: list[Callable[[Document], object]] = [
                lambda vs: vs["real_servers"][0].update(weight=50),
                lambda vs: vs["real_servers"].append(rc),
                lambda vs: vs["health_check"].update(interval=0.3),
                lambda vs: (
                    vs["real_servers"][1].update(weight=10),
                    vs["real_servers"][2].update(weight=200),
                ),
                # A goes, with connections established to it.
                lambda vs: vs["real_servers"].pop(0),
                lambda vs: vs["real_servers"][0].update(state="drain"),
                lambda vs: (
                    vs["real_servers"][0].update(state="online"),
                    vs.update(balancing="least_connections"),
                ),
                lambda vs: vs["real_servers"].pop(1),  # C goes
                lambda vs: vs.update(persistence={"mode": "source_ip"}, client_timeout=7200),
                lambda vs: vs.update(ports=f"{vip[1]},{second_port}"),
            ]
            for change in changes:
                service = revisions.service("rdp")
                change(service)
                revision = await revisions.apply(service)
                assert (await engine.status()).revision == revision
                assert await landing(vip) in {"A", "B", "C"}, "new clients are served"
                await asyncio.sleep(0.1)  # traffic flows between commits
                assert not any(t.done() for t in talkers), "a connection broke"
            assert revisions.revision == 11

            stop.set()
            counts = await asyncio.gather(*talkers)
            assert all(counts), "every connection relayed during the commits"
            assert await landing((vip_ip, second_port)) == "B"
            status = service_status(await engine.status(), "rdp")
            assert [rs.label for rs in status.real_servers] == ["B"]

            for client in clients:
                await client.roundtrip(b"after the last commit\n")
            # A removed real server's connections work until closed, then close cleanly.
            for client in on_a:
                assert await client.finish() == b""
            await wait_for(lambda: a.active == 0, what="A's connections ended")
            for client in clients:
                if client not in on_a:
                    await client.roundtrip(b"the others still work\n")
        finally:
            stop.set()
            for client in clients:
                await client.close()


@pytest.mark.parametrize("bad", ["new-service", "moved-port"])
async def test_a_port_that_cannot_be_bound_rejects_the_revision(
    engine: Engine, net: Addresses, bad: str
) -> None:
    async with EchoServer("A", net.ip()) as a:
        vip = (net.ip(), free_port(net.ip()))
        revisions = Revisions(engine)
        web = virtual_service("web", vip, [real_server("A", a.address)])
        await revisions.apply(web)
        assert await landing(vip) == "A"

        with socket.create_server((net.ip(), 0)) as holder:
            taken = holder.getsockname()
            changed = revisions.service("web")
            changed["real_servers"][0]["weight"] = 7
            if bad == "new-service":
                label = "admin"
                services = [changed, virtual_service(label, taken, [real_server("A", a.address)])]
            else:
                label = "web"
                changed.update(ip=taken[0], ports=str(taken[1]))
                services = [changed]

            with pytest.raises(EngineRejected, match=rf"virtual_services\[{label}\]\.ports"):
                await revisions.apply(*services)

            status = await engine.status()
            assert status.revision == 1
            assert [vs.label for vs in status.virtual_services] == ["web"]
            assert service_status(status, "web").real_servers[0].weight == 100
            assert await landing(vip) == "A", "the old revision still serves"

        # The engine takes a good revision after a rejected one.
        changed = revisions.service("web")
        changed["real_servers"][0]["weight"] = 7
        assert await revisions.apply(changed) == 2
        assert service_status(await engine.status(), "web").real_servers[0].weight == 7
