"""The controller compares configurations once, from the revision the engine runs, and gives
the engine that plan: a weight is one changed real server of one service."""

from __future__ import annotations

import asyncio
import itertools
import re
from pathlib import Path
from typing import Any

import pytest

from balancer import logs
from balancer.configuration import modify_real_server
from balancer.controller import Controller, ForwardFailed
from balancer.edits import Edit
from balancer.engines import EngineError
from balancer.events import (
    EngineChanged,
    HealthChanged,
    OperatorAction,
    RevisionApplied,
    RevisionSaved,
)
from balancer.ha.sync import Action
from balancer.model import NodeSettings, Pair, RealServer, RealServerState
from balancer.plan import Plan
from balancer.state import (
    EngineStatus,
    Health,
    Overview,
    RealServerStatus,
    VirtualServiceStatus,
)
from balancer.store import ReadOnly, Store
from balancer.validate import parse
from tests.appliance import guide_setup, wait_for
from tests.test_plan import document

DRAIN = RealServerState.DRAIN


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


class Watched(Recording):
    """A recording engine with a status, the real servers' health the test sets, and an
    outage the test switches on and off."""

    def __init__(self) -> None:
        super().__init__()
        self.health: dict[tuple[str, str], tuple[Health, str]] = {}
        self.down = False

    async def attach(self) -> int | None:
        if self.down:
            raise EngineError("engine.sock: connection refused")
        return self.runs

    async def status(self) -> EngineStatus:
        if self.down:
            raise EngineError("engine.sock: connection refused")

        def server(service: str, rs: RealServer) -> RealServerStatus:
            health, reason = self.health.get((service, rs.label), (Health.UP, ""))
            state = rs.state.value
            return RealServerStatus(
                label=rs.label, ip="", port=None, weight=rs.weight, state=state,
                health=health, reason=reason, since=0.0,
            )  # fmt: skip

        services = self.plans[-1].config.virtual_services
        return EngineStatus(
            engine=self.name,
            pid=1,
            started=0.0,
            revision=self.runs,
            virtual_services=tuple(
                VirtualServiceStatus(
                    label=vs.label,
                    ip="",
                    ports="",
                    real_servers=tuple(server(vs.label, rs) for rs in vs.real_servers),
                )
                for vs in services
            ),
        )


def test_every_change_is_published_once_in_order(tmp_path: Path) -> None:
    ticks = itertools.count(1)
    engine = Watched()
    refused = "connect failed: connection refused"

    async def scenario(controller: Controller) -> list[object]:
        seen = controller.events.subscribe()
        await controller.start()
        assert seen.pending() == []  # nothing applied yet, nothing to recover
        commit_ = await controller.commit("admin")
        assert await controller.check() is False  # the first look: no change to tell
        assert await controller.check() is False
        assert seen.pending() == [RevisionApplied(commit_.revision, "admin", 1.0)]

        engine.health[("CyberArk-PSM", "PSM1")] = (Health.UP, "connected")
        await controller.check()  # a reason changing while up is no news
        engine.health[("CyberArk-PSM", "PSM1")] = (Health.DOWN, refused)
        await controller.check()
        await controller.check()
        engine.health[("CyberArk-PSM", "PSM1")] = (Health.DOWN, "connect failed: timed out")
        await controller.check()
        engine.health[("CyberArk-PSM", "PSM1")] = (Health.UP, "connected")
        await controller.check()
        drained = await controller.set_state("CyberArk-PSM", "PSM2", DRAIN, "admin")

        engine.down = True
        assert await controller.check() is True
        assert await controller.check() is True  # the same fault again: said once
        engine.down = False
        engine.health[("CyberArk-PSM", "PSM1")] = (Health.DOWN, refused)
        assert await controller.check() is False
        await controller.check()  # the first look after a fault: no change to tell
        await controller.close(stop_engine=False)
        return [*seen.pending(), drained.id]

    with Store(tmp_path / "balancer.db") as store:
        head = store.head()
        store.save(parse(document()), base=head.id, author="test", message="the guide")
        controller = Controller(store, engine, clock=lambda: float(next(ticks)))  # type: ignore[arg-type]
        *published, drained = asyncio.run(scenario(controller))
    target = "CyberArk-PSM/PSM2"
    assert published == [
        HealthChanged("CyberArk-PSM", "PSM1", "down", refused, 2.0),
        HealthChanged("CyberArk-PSM", "PSM1", "down", "connect failed: timed out", 3.0),
        HealthChanged("CyberArk-PSM", "PSM1", "up", "connected", 4.0),
        RevisionSaved(drained, "admin", "drain", target, 5.0),
        RevisionApplied(drained, "admin", 6.0),
        OperatorAction("drain", "CyberArk-PSM", "PSM2", "admin", 7.0),
        EngineChanged("engine.sock: connection refused", 8.0),
        EngineChanged(None, 9.0),
    ]


class Counting:
    """A store that counts the reads System Overview's Commit box makes."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.reads = 0

    def __getattr__(self, name: str) -> Any:
        if name in ("head", "applied", "revision"):
            self.reads += 1
        return getattr(self.store, name)


def test_the_overview_reads_the_store_only_after_a_revision_is_saved_or_applied(
    tmp_path: Path,
) -> None:
    with Store(tmp_path / "balancer.db") as store:
        head = store.head()
        store.save(parse(document()), base=head.id, author="test", message="the guide")
        counting = Counting(store)
        controller = Controller(counting, Watched())  # type: ignore[arg-type]

        async def overviews(count: int) -> list[Overview]:
            return [await controller.overview() for _ in range(count)]

        first, *again = asyncio.run(overviews(10))
        reads = counting.reads
        assert reads > 0
        assert again == [first] * 9
        assert first.pending  # the guide's services, saved and never committed
        assert counting.reads == reads, "nine overviews without a change read nothing"

        asyncio.run(controller.commit("admin"))
        committed = asyncio.run(overviews(5))
        assert committed[0].applied == committed[0].head
        assert committed[0].pending == []
        reads = counting.reads
        asyncio.run(overviews(5))
        assert counting.reads == reads

        # An edit saved elsewhere (Controller.save) is told by its RevisionSaved.
        head = store.head()
        edit = modify_real_server(head.config, "CyberArk-PSM", "PSM1", {"weight": 7})
        saved = store.save(edit, base=head.id, author="admin", message="weight")
        asyncio.run(overviews(3))
        assert counting.reads == reads, "a save no event told of is not seen"
        controller.events.publish(RevisionSaved(saved.id, "admin", "modify", "", 0.0))
        (after,) = asyncio.run(overviews(1))
        assert after.head == saved.id
        assert len(after.pending) == 1


def test_a_drain_through_the_api_is_logged_as_its_events(tmp_path: Path) -> None:
    with guide_setup(tmp_path) as guide:
        box = guide.box
        box.client.post(
            "/virtual-services/CyberArk-PSM/real-servers/PSM1/state", {"state": "drain"}
        )
        log = box.data_dir / "logs" / "balancer.log"

        def logged() -> list[dict[str, Any]]:
            return [
                e
                for e in logs.entries(log)
                if e.get("event") in ("operator_action", "revision_applied")
            ]

        wait_for("the drain in balancer.log", lambda: len(logged()) >= 3)
        commit, applied, action = logged()[-3:]
        assert commit["author"] == "tester"  # the guide's commit
        assert applied["revision"] > commit["revision"]
        assert (action["action"], action["service"], action["server"]) == (
            "drain",
            "CyberArk-PSM",
            "PSM1",
        )
        assert action["message"] == "tester: drain real server PSM1 of CyberArk-PSM"
        assert action["source"] == "appliance"


def test_a_secondary_refuses_edits_and_runs_what_the_primary_sends(tmp_path: Path) -> None:
    """On an HA pair's Secondary the configuration is the Primary's: a save or a commit is
    refused in one line naming the Primary; a received revision is told as a save, and run
    as a commit is; drain, halt and online are the Primary's to do."""
    primary = Store(tmp_path / "primary.db")
    with primary, Store(tmp_path / "secondary.db") as store:
        pair = Pair(role="secondary", local_address="fd00::2", peer_address="fd00::1")  # type: ignore[arg-type]
        store.save_node_settings(NodeSettings(pair=pair), author="test")
        engine = Recording()
        controller = Controller(store, engine, clock=lambda: 5.0)  # type: ignore[arg-type]
        seen = controller.events.subscribe()
        refused = (
            "this node is the Secondary of an HA pair: its cluster configuration is read-only; "
            "make the change on the Primary at https://[fd00::1]:9443"
        )
        with pytest.raises(ReadOnly) as error:
            controller.save(Edit.restore({"virtual_services": []}), base=None, author="carol")
        assert [str(p) for p in error.value.problems] == [refused]
        with pytest.raises(ReadOnly, match=re.escape(refused)):
            asyncio.run(controller.commit("carol"))
        assert engine.plans == []
        assert store.head().id == 0

        made = primary.save(parse(document()), base=0, author="alice", message="the guide")
        controller.receive(
            made.config,
            revision=made.id,
            digest=made.digest,
            author=made.author,
            message=made.message,
            created=made.created,
        )
        applied = asyncio.run(controller.run_received(made.id, "peer fd00::1"))
        assert (applied.revision, applied.author) == (made.id, "peer fd00::1")
        assert engine.plans[-1].revision == made.id
        assert store.revision(made.id).digest == made.digest
        assert seen.pending() == [
            RevisionSaved(made.id, "alice", "receive", "", 5.0),
            RevisionApplied(made.id, "peer fd00::1", 5.0),
        ]

        with pytest.raises(ForwardFailed, match=r"done by the Primary at https://\[fd00::1\]:9443"):
            asyncio.run(controller.set_state("CyberArk-PSM", "PSM1", DRAIN, "carol"))
        asked: list[Action] = []

        async def forward(action: Action) -> int:
            asked.append(action)
            return made.id

        controller.forward = forward
        done = asyncio.run(controller.set_state("CyberArk-PSM", "PSM1", DRAIN, "carol"))
        assert done.id == made.id
        assert asked == [Action(DRAIN, "CyberArk-PSM", "PSM1", "carol")]
        assert len(engine.plans) == 1, "the Secondary's engine waits for the Primary's revision"
