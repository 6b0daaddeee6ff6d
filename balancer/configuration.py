"""Edits of the saved configuration, as the API, the command line and the WebUI make them.

Each edit takes the current configuration and untrusted input and returns a new, checked
configuration, or raises: Invalid (naming each field and reason) or Missing. Nothing here
saves; the caller stores the result as a new revision. Pure.
"""

from __future__ import annotations

from typing import Any

from balancer.model import Config, VirtualService
from balancer.validate import Invalid, Problem, checked, parse_as


class Missing(LookupError):
    """No such virtual service or real server."""

    def __init__(self, field: str, what: str) -> None:
        self.field = field
        super().__init__(what)


Document = dict[str, Any]


def _index(config: Config, label: str, field: str) -> int:
    for index, vs in enumerate(config.virtual_services):
        if vs.label == label:
            return index
    raise Missing(field, f"there is no virtual service {label!r}")


def _find(items: list[Document], label: str, field: str, noun: str) -> int:
    for index, item in enumerate(items):
        if item["label"] == label:
            return index
    raise Missing(field, f"there is no {noun} {label!r}")


def _with(config: Config, index: int, document: Document | None, *, insert: bool = False) -> Config:
    """``config`` with the virtual service at ``index`` replaced by ``document`` (inserted
    there, or removed if None). Only that service is parsed and checked on its own; every other
    one is the same object as before, so an edit costs one service, not the configuration."""
    services = list(config.virtual_services)
    if document is None:
        del services[index]
    else:
        label = document.get("label")
        where = f"virtual_services[{label if isinstance(label, str) and label else index}]"
        vs = parse_as(VirtualService, document, where)
        services[index : index if insert else index + 1] = [vs]
    return checked(Config(virtual_services=tuple(services)), known=config)


def _object(data: Any, noun: str) -> Document:
    if not isinstance(data, dict):
        raise Invalid([Problem("", f"a {noun} must be a JSON object")])
    return dict(data)


def add_virtual_service(config: Config, data: Any) -> Config:
    document = _object(data, "virtual service")
    return _with(config, len(config.virtual_services), document, insert=True)


def modify_virtual_service(config: Config, label: str, changes: Any) -> Config:
    index = _index(config, label, "label")
    current: Document = config.virtual_services[index].model_dump(mode="json")
    changes = _object(changes, "virtual service")
    check = changes.get("health_check")
    if (
        isinstance(check, dict)
        and check.get("type", current["health_check"]["type"]) != (current["health_check"]["type"])
    ):
        # A new kind of check starts from its own defaults, not the old kind's path or script.
        current["health_check"] = {
            key: value for key, value in current["health_check"].items() if key not in TYPE_SPECIFIC
        }
    return _with(config, index, _merge(current, changes))


TYPE_SPECIFIC = ("method", "path", "expect", "script")


def remove_virtual_service(config: Config, label: str) -> Config:
    return _with(config, _index(config, label, "label"), None)


def add_real_server(config: Config, service: str, data: Any) -> Config:
    index = _index(config, service, "virtual_service")
    vs: Document = config.virtual_services[index].model_dump(mode="json")
    vs["real_servers"].append(_object(data, "real server"))
    return _with(config, index, vs)


def modify_real_server(config: Config, service: str, label: str, changes: Any) -> Config:
    index = _index(config, service, "virtual_service")
    vs: Document = config.virtual_services[index].model_dump(mode="json")
    at = _find(vs["real_servers"], label, "label", f"real server in {service!r} called")
    vs["real_servers"][at] = _merge(vs["real_servers"][at], _object(changes, "real server"))
    return _with(config, index, vs)


def remove_real_server(config: Config, service: str, label: str) -> Config:
    index = _index(config, service, "virtual_service")
    vs: Document = config.virtual_services[index].model_dump(mode="json")
    del vs["real_servers"][_find(vs["real_servers"], label, "label", "real server")]
    return _with(config, index, vs)


def _merge(current: Document, changes: Document) -> Document:
    """Apply a partial change; nested sections (health_check, persistence) merge too."""
    merged = dict(current)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged
