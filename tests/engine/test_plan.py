"""An engine applies the plan it is given and compares no configurations itself; a plan from a
revision it does not run is made again from what it runs."""

from __future__ import annotations

from balancer.engines import Engine
from balancer.plan import Plan, make
from balancer.validate import parse
from tests.backends import Addresses, EchoServer, free_port

from . import Revisions, landing, real_server, virtual_service

LANDINGS = 4  # round robin over two servers: each takes two


async def test_the_engine_does_what_the_plan_says(engine: Engine, net: Addresses) -> None:
    """A plan that leaves out a halt leaves the server serving; the plan that says it halts
    it. An engine that compared the configurations itself would halt it the first time."""
    async with EchoServer("A", net.ip()) as a, EchoServer("B", net.ip()) as b:
        vip = (net.ip(), free_port(net.ip()))
        revisions = Revisions(engine)
        await revisions.apply(
            virtual_service("web", vip, [real_server("A", a.address), real_server("B", b.address)])
        )
        service = revisions.service("web")
        service["real_servers"][0]["state"] = "halt"
        halted = parse({"virtual_services": [service]})

        await engine.apply(Plan(revision=2, base=1, config=halted))  # "nothing changes"
        assert {await landing(vip) for _ in range(LANDINGS)} == {"A", "B"}
        assert (await engine.status()).revision == 2

        said = make(revisions.config, halted, 3, 2)
        assert [c.changed for c in said.changed] == [("A",)]
        await engine.apply(said)
        assert {await landing(vip) for _ in range(LANDINGS)} == {"B"}


async def test_a_plan_from_another_revision_is_made_from_what_runs(
    engine: Engine, net: Addresses
) -> None:
    """The plan says nothing changes, from a revision the engine never ran: the engine plans
    from what it runs, and runs the plan's configuration."""
    async with EchoServer("A", net.ip()) as a, EchoServer("B", net.ip()) as b:
        vip = (net.ip(), free_port(net.ip()))
        revisions = Revisions(engine)
        await revisions.apply(
            virtual_service("web", vip, [real_server("A", a.address), real_server("B", b.address)])
        )
        service = revisions.service("web")
        service["real_servers"][0]["state"] = "halt"
        halted = parse({"virtual_services": [service]})

        await engine.apply(Plan(revision=8, base=7, config=halted))
        assert {await landing(vip) for _ in range(LANDINGS)} == {"B"}
        assert (await engine.status()).revision == 8
