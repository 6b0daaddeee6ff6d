"""Running versus desired configuration: the list of changes a commit makes. Pure.

Each change says whether an engine can make it at runtime (weight, drain, halt) or needs to
reload; the built-in engine does everything at runtime, HAProxy reloads for the rest. What a
change is called in the guide's words is ``balancer.web.words.said``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from balancer.model import Config

RUNTIME_FIELDS = {"weight", "state", "max_connections"}


@dataclass(frozen=True, slots=True)
class Change:
    path: str
    before: Any
    after: Any
    runtime: bool


def changes(running: Config | None, desired: Config) -> list[Change]:
    before = running.model_dump(mode="json") if running else {"virtual_services": []}
    return _diff("", before, desired.model_dump(mode="json"))


def needs_reload(found: list[Change]) -> bool:
    return any(not change.runtime for change in found)


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
