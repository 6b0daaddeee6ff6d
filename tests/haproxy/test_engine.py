"""What only the HAProxy engine has to show: a configuration HAProxy itself refuses, runtime
changes that need no reload, states that cross a reload, a daemon that finds HAProxy again,
and HAProxy's log lines. The behaviour both engines share is in tests/engine/."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

import pytest

from balancer.engines import EngineError, EngineRejected
from balancer.engines.haproxy import HaproxyEngine, logs, runtime
from balancer.model import Config
from balancer.validate import parse
from tests.backends import Addresses, EchoServer, free_port
from tests.engine import (
    Client,
    Revisions,
    landing,
    real_server,
    server_status,
    virtual_service,
    wait_for,
    wait_for_health,
)

CHECK = {"type": "connect", "interval": 0.2, "timeout": 1, "rise": 2, "fall": 1}


async def stat(engine: HaproxyEngine, service: str, server: str) -> runtime.Row:
    rows = runtime.parse_stat(await engine.master.cli(runtime.worker(None, "show stat")))
    return rows[(service, server)]


async def test_a_real_server_named_like_the_fallback_is_refused_and_changes_nothing(
    haproxy: HaproxyEngine, net: Addresses
) -> None:
    """The model allows a real server named like the fallback; HAProxy 2.6 no longer refuses
    two servers of one name once they have ids, so the engine does, naming the field, and
    what runs stays as it was. (HAProxy's own refusal: tests/haproxy/test_peers.py.)"""
    async with EchoServer("A", net.ip()) as a:
        vip = (net.ip(), free_port(net.ip()))
        revisions = Revisions(haproxy)
        await revisions.apply(virtual_service("web", vip, [real_server("A", a.address)]))
        running = await haproxy.configuration()
        pid = (await haproxy.status()).pid

        fallback = {"ip": a.host, "port": a.port}
        clash = virtual_service("web", vip, [real_server("fallback", a.address)], fallback=fallback)
        with pytest.raises(EngineRejected) as rejected:
            await revisions.apply(clash)

        assert str(rejected.value) == (
            "virtual_services[web].real_servers[fallback]: the label 'fallback' is the "
            "fallback server's in HAProxy; choose another"
        )
        problems = haproxy.problems(parse({"virtual_services": [clash]}), Config())
        assert [p.field for p in problems] == ["virtual_services[web].real_servers[fallback]"]
        assert await haproxy.configuration() == running
        status = await haproxy.status()
        assert (status.revision, status.pid) == (1, pid)
        assert await landing(vip) == "A"


async def test_a_taken_port_is_refused_before_haproxy_reloads(
    haproxy: HaproxyEngine, net: Addresses
) -> None:
    async with EchoServer("A", net.ip()) as a:
        vip = (net.ip(), free_port(net.ip()))
        revisions = Revisions(haproxy)
        await revisions.apply(virtual_service("web", vip, [real_server("A", a.address)]))
        reloads = (await haproxy.master.processes()).reloads
        taken = virtual_service("admin", a.address, [real_server("A", a.address)])
        with pytest.raises(EngineRejected, match=r"virtual_services\[admin\]\.ports: cannot bind"):
            await revisions.apply(revisions.service("web"), taken)
        assert (await haproxy.master.processes()).reloads == reloads, "no reload was tried"


async def test_weight_drain_and_halt_change_without_a_reload(
    haproxy: HaproxyEngine, net: Addresses
) -> None:
    async with EchoServer("A", net.ip()) as a, EchoServer("B", net.ip()) as b:
        vip = (net.ip(), free_port(net.ip()))
        revisions = Revisions(haproxy)
        servers = [real_server("A", a.address), real_server("B", b.address)]
        await revisions.apply(virtual_service("web", vip, servers))
        before = await haproxy.master.processes()

        for change, status, weight in [
            ({"state": "drain"}, "no check", "0"),
            ({"state": "online", "weight": 7}, "no check", "7"),
            ({"state": "halt"}, "MAINT", "7"),
            ({"state": "online", "weight": 100, "max_connections": 5}, "no check", "100"),
        ]:
            service = revisions.service("web")
            service["real_servers"][0].update(change)
            await revisions.apply(service)
            row = await stat(haproxy, "web", "A")
            assert (row["status"], row["weight"]) == (status, weight), change
        assert row["slim"] == "5"
        assert all(plan.runtime for plan in revisions.plans[1:])
        after = await haproxy.master.processes()
        assert (after.current, after.reloads) == (before.current, before.reloads), "no reload"
        assert "weight 100 maxconn 5" in await haproxy.configuration()

        service = revisions.service("web") | {"client_timeout": 60}
        await revisions.apply(service)
        assert not revisions.plans[-1].runtime
        reloaded = await haproxy.master.processes()
        assert (reloaded.current, reloaded.reloads) != (before.current, before.reloads)


async def test_states_and_health_cross_a_reload(haproxy: HaproxyEngine, net: Addresses) -> None:
    """Right after a reload the new worker knows which servers are down, without waiting for
    checks, and new clients go only where they went before it."""
    async with (
        EchoServer("A", net.ip()) as a,
        EchoServer("B", net.ip()) as b,
        EchoServer("C", net.ip()) as c,
    ):
        vip = (net.ip(), free_port(net.ip()))
        revisions = Revisions(haproxy)
        servers = [real_server(s.name, s.address) for s in (a, b, c)]
        await revisions.apply(virtual_service("web", vip, servers, health_check=CHECK))
        service = revisions.service("web")
        service["real_servers"][0]["state"] = "drain"
        await revisions.apply(service)
        await b.stop_listening()
        await wait_for_health(haproxy, "web", "B", "down", timeout=5)
        held = await Client.open(vip)
        try:
            await revisions.apply(revisions.service("web") | {"connect_timeout": 2})
            status = await haproxy.status()
            assert server_status(status, "web", "B").health.value == "down"
            assert (await stat(haproxy, "web", "A"))["weight"] == "0"
            assert [await landing(vip) for _ in range(4)] == ["C"] * 4
            await held.roundtrip(b"across the reload\n")
        finally:
            await held.close()


async def test_a_daemon_that_restarts_finds_haproxy_running(
    haproxy: HaproxyEngine, net: Addresses
) -> None:
    async with EchoServer("A", net.ip()) as a:
        vip = (net.ip(), free_port(net.ip()))
        await Revisions(haproxy).apply(virtual_service("web", vip, [real_server("A", a.address)]))
        held = await Client.open(vip)
        try:
            worker = (await haproxy.status()).pid
            await haproxy.detach()

            again = HaproxyEngine(haproxy.paths.data_dir)
            assert await again.attach() == 1
            assert (await again.status()).pid == worker
            await held.roundtrip(b"the daemon restarted\n")

            # A commit cut short: the worker reports another revision than the file says.
            saved = json.loads(again.paths.running.read_text())
            again.paths.running.write_text(json.dumps(saved | {"reloaded": 99}))
            assert await HaproxyEngine(haproxy.paths.data_dir).attach() is None
        finally:
            await held.close()


async def test_persistence_is_listed_and_cleared(haproxy: HaproxyEngine, net: Addresses) -> None:
    async with EchoServer("A", net.ip()) as a, EchoServer("B", net.ip()) as b:
        vip = (net.ip(), free_port(net.ip()))
        servers = [real_server("A", a.address), real_server("B", b.address)]
        persistence = {"mode": "source_ip", "timeout": 600}
        await Revisions(haproxy).apply(
            virtual_service("rdp", vip, servers, persistence=persistence)
        )
        sources = [net.ip() for _ in range(3)]
        landed = {source: await landing(vip, source) for source in sources}
        holder = net.ip()
        held = await Client.open(vip, holder)
        try:

            async def entries() -> dict[str, dict[str, object]]:
                return {e["client"]: e for e in await haproxy.persistence("rdp")}

            found = await entries()
            assert {c: e["server"] for c, e in found.items()} == landed | {holder: held.name}
            assert found[holder]["expires_in"] == 600, "held: the timeout starts at its end"
            await wait_for(lambda: _closed(haproxy, sources), what="the landings' sessions end")

            assert await haproxy.clear_persistence("rdp") == 3
            assert list(await entries()) == [holder], "HAProxy keeps an entry in use"
            await held.roundtrip(b"a connection keeps its entry\n")
        finally:
            await held.close()


async def _closed(engine: HaproxyEngine, sources: list[str]) -> bool:
    """Whether no entry of ``sources`` is still used by a connection HAProxy is closing."""
    table = await engine.master.cli(runtime.worker(None, "show table rdp"))
    return all(e.client not in sources or not e.in_use for e in runtime.parse_table(table, {}))


async def test_health_changes_reach_the_log(haproxy: HaproxyEngine, net: Addresses) -> None:
    async with EchoServer("A", net.ip()) as a:
        vip = (net.ip(), free_port(net.ip()))
        await Revisions(haproxy).apply(
            virtual_service("web", vip, [real_server("A", a.address)], health_check=CHECK)
        )
        assert await landing(vip) == "A"
        await a.stop_listening()
        await wait_for_health(haproxy, "web", "A", "down", timeout=5)

        def logged() -> list[dict[str, object]]:
            return list(logs.entries(haproxy.paths.log))

        await wait_for(lambda: any(e.get("event") == "health" for e in logged()), timeout=5)
        health = next(e for e in logged() if e.get("event") == "health")
        assert (health["service"], health["server"], health["health"]) == ("web", "A", "down")
        assert health["reason"] == "Connection refused"
        assert any(e.get("event") == "connection" and e["server"] == "A" for e in logged())


async def test_established_connections_outlive_their_worker(
    haproxy: HaproxyEngine, net: Addresses
) -> None:
    """An old worker keeps relaying what it had; its connections count in the status."""
    async with EchoServer("A", net.ip()) as a:
        vip = (net.ip(), free_port(net.ip()))
        revisions = Revisions(haproxy)
        await revisions.apply(virtual_service("web", vip, [real_server("A", a.address)]))
        held = await Client.open(vip)
        try:
            first = (await haproxy.master.processes()).current
            await revisions.apply(revisions.service("web") | {"client_timeout": 60})
            processes = await haproxy.master.processes()
            assert processes.old == (first,)
            status = await haproxy.status()
            assert status.pid == processes.current
            assert status.virtual_services[0].counters.active == 1
            await held.roundtrip(b"relayed by the old worker\n")
        finally:
            await held.close()
        await wait_for(
            lambda: _no_old_workers(haproxy), timeout=10, what="the old worker leaves at last"
        )


async def _no_old_workers(engine: HaproxyEngine) -> bool:
    return (await engine.master.processes()).old == ()


async def test_status_answers_while_a_commit_reloads(
    haproxy: HaproxyEngine, net: Addresses
) -> None:
    """The master CLI is gone for a moment while the master reloads; status waits it out and
    shows the old revision or the new one."""
    async with EchoServer("A", net.ip()) as a:
        vip = (net.ip(), free_port(net.ip()))
        revisions = Revisions(haproxy)
        await revisions.apply(virtual_service("web", vip, [real_server("A", a.address)]))
        seen: set[int | None] = set()
        done = asyncio.Event()

        async def watch() -> None:
            for _ in range(1000):
                if done.is_set():
                    return
                seen.add((await haproxy.status()).revision)
                await asyncio.sleep(0.005)

        watcher = asyncio.create_task(watch())
        try:
            for timeout in (60, 70, 80):
                await revisions.apply(revisions.service("web") | {"client_timeout": timeout})
        finally:
            done.set()
            await watcher
        assert seen <= {1, 2, 3, 4}
        assert len(seen) > 1


async def test_a_killed_haproxy_is_started_again(haproxy: HaproxyEngine, net: Addresses) -> None:
    async with EchoServer("A", net.ip()) as a:
        vip = (net.ip(), free_port(net.ip()))
        revisions = Revisions(haproxy)
        await revisions.apply(virtual_service("web", vip, [real_server("A", a.address)]))
        master = haproxy.master.pid()
        assert master is not None
        os.kill(master, signal.SIGKILL)
        await wait_for(lambda: _master_gone(haproxy), timeout=10, what="HAProxy is gone")

        assert await haproxy.attach() is None, "a new HAProxy runs no revision yet"
        assert haproxy.master.pid() not in (None, master)
        await revisions.apply(revisions.service("web"))
        assert await landing(vip) == "A"


async def _master_gone(engine: HaproxyEngine) -> bool:
    try:
        await engine.master.processes()
    except EngineError:
        return True
    return False


async def test_without_haproxy_the_engine_says_so(tmp_path: Path) -> None:
    engine = HaproxyEngine(tmp_path, binary=str(tmp_path / "no-haproxy"))
    with pytest.raises(EngineError, match="HAProxy is not installed"):
        await engine.attach()


@pytest.mark.slow
async def test_haproxy_hands_persistence_to_the_next_worker(
    haproxy: HaproxyEngine, net: Addresses
) -> None:
    """Once a worker holds its tables (HAProxy's peers wait up to 10 s after a start to know
    none will come), each reload hands them over natively; until then the engine copies them."""
    async with EchoServer("A", net.ip()) as a, EchoServer("B", net.ip()) as b:
        vip = (net.ip(), free_port(net.ip()))
        servers = [real_server("A", a.address), real_server("B", b.address)]
        revisions = Revisions(haproxy)
        await revisions.apply(
            virtual_service("rdp", vip, servers, persistence={"mode": "source_ip"})
        )
        sources = [net.ip() for _ in range(6)]
        first = {source: await landing(vip, source) for source in sources}

        async def synced() -> bool:
            return runtime.peers_synced(await haproxy.master.cli("@1 show peers"))

        await wait_for(synced, timeout=15, what="the worker's peers settle")
        for timeout in (60, 70, 80):
            await revisions.apply(revisions.service("rdp") | {"client_timeout": timeout})
            assert await synced(), "the new worker learnt the old one's table"
            assert {source: await landing(vip, source) for source in sources} == first
