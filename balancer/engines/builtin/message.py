"""A plan as the built-in engine's control message, and the plan again in the engine.

A plan from the revision the engine runs travels as what it changes: the services added, the
labels of those removed, and each changed service whole with the plan's verdicts on its real
servers, so a weight costs one service's JSON. A plan from nothing, or for an engine that runs
another revision, carries the whole configuration, and the engine asks ``plan.make`` for the
plan from what it runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from balancer.engines.builtin.dataplane import ApplyError
from balancer.model import Config, VirtualService
from balancer.plan import Plan, ServiceChange, make
from balancer.validate import parse, parse_as

Message = dict[str, Any]
Adapt = Callable[[VirtualService], VirtualService]


class Stale(ApplyError):
    """The plan starts from a revision the engine does not run."""


def whole(config: Config, revision: int) -> Message:
    return {
        "op": "apply",
        "revision": revision,
        "base": None,
        "config": config.model_dump(mode="json"),
    }


def changes(plan: Plan) -> Message:
    """Only what ``plan`` changes; ``whole`` for a plan from nothing."""
    if plan.base is None:
        return whole(plan.config, plan.revision)
    return {
        "op": "apply",
        "revision": plan.revision,
        "base": plan.base,
        "added": [_dump(vs) for vs in plan.added],
        "removed": [vs.label for vs in plan.removed],
        "changed": [
            {
                "service": _dump(c.after),
                "fields": sorted(c.fields),
                "added": list(c.added),
                "removed": list(c.removed),
                "changed": list(c.changed),
                "readdressed": sorted(c.readdressed),
                "rechecked": sorted(c.rechecked),
                "runtime": c.runtime,
            }
            for c in plan.changed
        ],
    }


def received(
    message: Message,
    running: Mapping[str, VirtualService],
    revision: int | None,
    adapt: Adapt | None = None,
) -> Plan:
    """The plan in ``message`` for an engine that runs ``running`` (revision ``revision``);
    ``adapt`` is applied to every service it is given. Invalid if a service does not parse,
    Stale if the plan starts from another revision than ``revision``."""
    same = adapt or _same
    target = int(message["revision"])
    base = message["base"]
    if base is None:
        config = parse(message["config"])
        config = Config.model_construct(
            virtual_services=tuple(same(vs) for vs in config.virtual_services)
        )
        known = Config.model_construct(virtual_services=tuple(running.values()))
        return make(known if running else None, config, target, revision)
    if base != revision:
        raise Stale(f"the plan is from revision {base}; the engine runs revision {revision}")
    added = tuple(same(_service(data)) for data in message["added"])
    removed = tuple(running[label] for label in message["removed"])
    changed = tuple(_change(data, running, same) for data in message["changed"])
    services = dict(running)
    for vs in removed:
        del services[vs.label]
    for change in changed:
        services[change.label] = change.after
    for vs in added:
        services[vs.label] = vs
    return Plan(
        target,
        base,
        Config.model_construct(virtual_services=tuple(services.values())),
        added,
        removed,
        changed,
        {c.label: c for c in changed},
        frozenset(vs.label for vs in added),
    )


def _change(data: Message, running: Mapping[str, VirtualService], adapt: Adapt) -> ServiceChange:
    after = adapt(_service(data["service"]))
    return ServiceChange(
        running[after.label],
        after,
        frozenset(data["fields"]),
        tuple(data["added"]),
        tuple(data["removed"]),
        tuple(data["changed"]),
        frozenset(data["readdressed"]),
        frozenset(data["rechecked"]),
        runtime=bool(data["runtime"]),
    )


def _service(data: Any) -> VirtualService:
    return parse_as(VirtualService, data, f"virtual_services[{data.get('label')}]")


def _dump(vs: VirtualService) -> Message:
    return vs.model_dump(mode="json")


def _same(vs: VirtualService) -> VirtualService:
    return vs
