"""Running versus desired configuration: what a commit changes, decided here once. Pure.

``make`` compares the two configurations service by service: a virtual service that is the same
object (an edit keeps every service it does not touch) or equal is skipped at once, so a commit
costs what it changes. The ``Plan`` it returns is what an engine applies, without comparing
anything again: services added, removed and changed, and for each changed one its real servers
added, removed and changed, which of them must be health-checked afresh, and whether the whole
plan can be applied at runtime (weight, drain, halt, connection cap) or needs a reload. The
built-in engine does everything at runtime; HAProxy reloads for the rest.

``changes`` lists the same differences field by field, for the Commit box; what a change is
called in the guide's words is ``balancer.words.said``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from balancer.model import Config, RealServer, VirtualService

RUNTIME_FIELDS = frozenset({"weight", "state", "max_connections"})
# A real server's health says nothing of another address or port.
ADDRESS_FIELDS = frozenset({"ip", "port"})
# A service's fields that change where or how its real servers are checked.
CHECK_FIELDS = frozenset({"health_check", "ports"})


@dataclass(frozen=True, slots=True)
class ServiceChange:
    """One virtual service in both configurations, not the same."""

    before: VirtualService
    after: VirtualService
    fields: frozenset[str]  # the service's own fields that differ (real servers aside)
    added: tuple[str, ...]  # real servers, by label
    removed: tuple[str, ...]
    changed: tuple[str, ...]  # in both, different
    readdressed: frozenset[str]  # changed servers whose address or port differs
    rechecked: frozenset[str]  # servers whose health must be found afresh
    runtime: bool  # only runtime fields of existing servers changed

    @property
    def label(self) -> str:
        return self.after.label

    def servers_changed(self) -> list[tuple[RealServer, RealServer]]:
        """Each changed real server, before and after."""
        old = {rs.label: rs for rs in self.before.real_servers}
        changed = set(self.changed)
        return [(old[rs.label], rs) for rs in self.after.real_servers if rs.label in changed]


@dataclass(frozen=True, slots=True)
class Plan:
    """What an engine does to go from revision ``base`` (None: nothing known to run) to
    ``revision``, whose whole configuration is ``config``."""

    revision: int
    base: int | None
    config: Config
    added: tuple[VirtualService, ...] = ()
    removed: tuple[VirtualService, ...] = ()
    changed: tuple[ServiceChange, ...] = ()
    by_label: Mapping[str, ServiceChange] = field(default_factory=dict, compare=False)
    added_labels: frozenset[str] = frozenset()

    @property
    def runtime(self) -> bool:
        """Whether every change can be made at runtime, without a reload."""
        return (
            self.base is not None
            and not self.added
            and not self.removed
            and all(c.runtime for c in self.changed)
        )

    def keeps_health(self, service: str, server: str) -> bool:
        """Whether ``server`` of ``service`` ran before and its health still holds (the same
        address, port and check); False for anything new."""
        change = self.by_label.get(service)
        if change is not None:
            return server not in change.rechecked and change.before.real_server(server) is not None
        return self.base is not None and service not in self.added_labels


def make(running: Config | None, desired: Config, revision: int, base: int | None) -> Plan:
    """The plan from ``running`` (revision ``base``) to ``desired`` (``revision``); with no
    running configuration every service is added."""
    if running is None:
        labels = frozenset(vs.label for vs in desired.virtual_services)
        return Plan(revision, None, desired, desired.virtual_services, added_labels=labels)
    old = {vs.label: vs for vs in running.virtual_services}
    added, changed = [], []
    for vs in desired.virtual_services:
        before = old.pop(vs.label, None)
        if before is None:
            added.append(vs)
        elif before is not vs and before != vs:
            changed.append(service_change(before, vs))
    return Plan(
        revision,
        base,
        desired,
        tuple(added),
        tuple(old.values()),
        tuple(changed),
        {c.label: c for c in changed},
        frozenset(vs.label for vs in added),
    )


def service_change(before: VirtualService, after: VirtualService) -> ServiceChange:
    fields = frozenset(
        name
        for name in VirtualService.model_fields
        if name != "real_servers" and getattr(before, name) != getattr(after, name)
    )
    old = {rs.label: rs for rs in before.real_servers}
    added, changed, readdressed, runtime_only = [], [], set(), True
    for rs in after.real_servers:
        was = old.pop(rs.label, None)
        if was is None:
            added.append(rs.label)
        elif was is not rs and was != rs:
            changed.append(rs.label)
            differ = _differ(was, rs)
            runtime_only = runtime_only and differ <= RUNTIME_FIELDS
            if differ & ADDRESS_FIELDS:
                readdressed.add(rs.label)
    rechecked = set(added) | readdressed
    if fields & CHECK_FIELDS and _check_moved(before, after):
        rechecked |= {rs.label for rs in after.real_servers}
    return ServiceChange(
        before,
        after,
        fields,
        tuple(added),
        tuple(old),
        tuple(changed),
        frozenset(readdressed),
        frozenset(rechecked),
        runtime=runtime_only and not fields and not added and not old,
    )


def _differ(before: RealServer, after: RealServer) -> frozenset[str]:
    return frozenset(
        name for name in RealServer.model_fields if getattr(before, name) != getattr(after, name)
    )


def _check_moved(before: VirtualService, after: VirtualService) -> bool:
    """Whether the check itself, or the port it connects to, changed: a new port for a service
    checks the same servers the same way unless its first port moved."""
    return before.health_check != after.health_check or before.first_port != after.first_port


# --- the same differences, field by field, for the operator -------------------------------------


@dataclass(frozen=True, slots=True)
class Change:
    path: str
    before: Any
    after: Any
    runtime: bool


def changes(running: Config | None, desired: Config) -> list[Change]:
    """Every setting that differs, in order: services removed, then each of ``desired``'s
    services added or changed; only the services that differ are written out."""
    plan = make(running, desired, 0, None if running is None else 0)
    found = [Change(_at(vs.label), _dump(vs), None, False) for vs in plan.removed]
    for vs in plan.config.virtual_services:
        if vs.label in plan.added_labels:
            found.append(Change(_at(vs.label), None, _dump(vs), False))
        elif vs.label in plan.by_label:
            change = plan.by_label[vs.label]
            found += _diff(_at(vs.label), _dump(change.before), _dump(change.after))
    return found


def _at(label: str) -> str:
    return f"virtual_services[{label}]"


def _dump(vs: VirtualService) -> dict[str, Any]:
    return vs.model_dump(mode="json")


def _diff(path: str, before: Any, after: Any) -> list[Change]:
    if isinstance(before, dict) and isinstance(after, dict):
        found = []
        for key in after:
            found += _diff(f"{path}.{key}" if path else key, before.get(key), after[key])
        return found
    if _labelled(before) and _labelled(after):
        old = {item["label"]: item for item in before}
        new = {item["label"]: item for item in after}
        found = [
            Change(f"{path}[{label}]", old[label], None, False) for label in old if label not in new
        ]
        for label, item in new.items():
            where = f"{path}[{label}]"
            if label in old:
                found += _diff(where, old[label], item)
            else:
                found.append(Change(where, None, item, False))
        return found
    if before == after:
        return []
    field = path.rsplit(".", 1)[-1]
    return [Change(path, before, after, field in RUNTIME_FIELDS and ".real_servers[" in path)]


def _labelled(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(i, dict) and "label" in i for i in value)
