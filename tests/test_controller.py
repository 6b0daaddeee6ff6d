"""The controller compares configurations once, from the revision the engine runs, and gives
the engine that plan: a weight is one changed real server of one service."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from balancer.configuration import modify_real_server
from balancer.controller import Controller
from balancer.model import RealServerState
from balancer.plan import Plan
from balancer.store import Store
from balancer.validate import parse
from tests.test_plan import document


class Recording:
    """An engine that runs nothing and keeps every plan it is given."""

    name = "recording"

    def __init__(self, runs: int | None = None) -> None:
        self.plans: list[Plan] = []
        self.runs = runs

    async def attach(self) -> int | None:
        return self.runs

    async def apply(self, plan: Plan) -> None:
        self.plans.append(plan)
        self.runs = plan.revision

    async def detach(self) -> None:
        """Nothing to let go of."""


def commit(controller: Controller, edit: Any = None) -> Plan:
    store = controller.store
    head = store.head()
    if edit is not None:
        store.save(edit(head.config), base=head.id, author="test", message="edit")
    asyncio.run(controller.commit("test"))
    engine = controller.engine
    assert isinstance(engine, Recording)
    return engine.plans[-1]


def test_a_commit_plans_from_the_applied_revision(tmp_path: Path) -> None:
    with Store(tmp_path / "balancer.db") as store:
        controller = Controller(store, Recording())  # type: ignore[arg-type]
        first = commit(controller, lambda _: parse(document()))
        assert first.base is None
        assert [vs.label for vs in first.added] == ["CyberArk-PSM", "CyberArk-PSM-Web"]

        weighted = commit(
            controller, lambda c: modify_real_server(c, "CyberArk-PSM", "PSM1", {"weight": 5})
        )
        assert weighted.base == first.revision
        assert [(c.label, c.changed, c.runtime) for c in weighted.changed] == [
            ("CyberArk-PSM", ("PSM1",), True)
        ]
        assert (weighted.added, weighted.removed) == ((), ())
        web = [vs for vs in weighted.config.virtual_services if vs.label == "CyberArk-PSM-Web"]
        assert web[0] is first.config.virtual_services[1], "the untouched service is kept"


def test_a_drain_plans_from_what_runs_and_keeps_pending_edits(tmp_path: Path) -> None:
    with Store(tmp_path / "balancer.db") as store:
        controller = Controller(store, Recording())  # type: ignore[arg-type]
        commit(controller, lambda _: parse(document()))
        head = store.head()
        pending = modify_real_server(head.config, "CyberArk-PSM-Web", "PSM2", {"weight": 9})
        store.save(pending, base=head.id, author="test", message="pending")
        asyncio.run(controller.set_state("CyberArk-PSM", "PSM1", RealServerState.DRAIN, "test"))
        engine = controller.engine
        assert isinstance(engine, Recording)
        drained = engine.plans[-1]
        assert [(c.label, c.changed) for c in drained.changed] == [("CyberArk-PSM", ("PSM1",))]
        assert [c.path for c in controller.pending().changes] == [
            "virtual_services[CyberArk-PSM-Web].real_servers[PSM2].weight"
        ]


def test_an_engine_that_runs_another_revision_gets_the_plan_from_it(tmp_path: Path) -> None:
    """After a restart the engine says what it runs; the plan to the applied revision is
    from that one, not from nothing."""
    with Store(tmp_path / "balancer.db") as store:
        first = commit(Controller(store, Recording()), lambda _: parse(document()))  # type: ignore[arg-type]
        head = store.head()
        store.save(
            modify_real_server(head.config, "CyberArk-PSM", "PSM2", {"state": "halt"}),
            base=head.id,
            author="test",
            message="halt",
        )
        store.mark_applied(store.head().id, author="test")
        engine = Recording(runs=first.revision)
        restarted = Controller(store, engine)  # type: ignore[arg-type]

        async def restart() -> None:
            await restarted.start()
            await restarted.close(stop_engine=False)

        asyncio.run(restart())
        (plan,) = engine.plans
        assert plan.base == first.revision
        assert [(c.label, c.changed) for c in plan.changed] == [("CyberArk-PSM", ("PSM2",))]
