"""Edits of the saved configuration, as the API, the command line and the WebUI make them.

Each edit takes the current configuration and untrusted input and returns a new, checked
configuration, or raises: Invalid (naming each field and reason) or Missing. Nothing here
saves; the caller stores the result as a new revision. Pure.
"""

from __future__ import annotations

from typing import Any

from balancer.model import Config
from balancer.validate import Invalid, Problem, parse


class Missing(LookupError):
    """No such virtual service or real server."""

    def __init__(self, field: str, what: str) -> None:
        self.field = field
        super().__init__(what)


Document = dict[str, Any]


def _services(config: Config) -> list[Document]:
    services: list[Document] = config.model_dump(mode="json")["virtual_services"]
    return services


def _find(items: list[Document], label: str, field: str, noun: str) -> int:
    for index, item in enumerate(items):
        if item["label"] == label:
            return index
    raise Missing(field, f"there is no {noun} {label!r}")


def _rebuild(services: list[Document]) -> Config:
    return parse({"virtual_services": services})


def _object(data: Any, noun: str) -> Document:
    if not isinstance(data, dict):
        raise Invalid([Problem("", f"a {noun} must be a JSON object")])
    return dict(data)


def add_virtual_service(config: Config, data: Any) -> Config:
    return _rebuild([*_services(config), _object(data, "virtual service")])


def modify_virtual_service(config: Config, label: str, changes: Any) -> Config:
    services = _services(config)
    index = _find(services, label, "label", "virtual service")
    changes = _object(changes, "virtual service")
    check = changes.get("health_check")
    if (
        isinstance(check, dict)
        and check.get("type", services[index]["health_check"]["type"])
        != (services[index]["health_check"]["type"])
    ):
        # A new kind of check starts from its own defaults, not the old kind's path or script.
        services[index]["health_check"] = {
            key: value
            for key, value in services[index]["health_check"].items()
            if key not in TYPE_SPECIFIC
        }
    services[index] = _merge(services[index], changes)
    return _rebuild(services)


TYPE_SPECIFIC = ("method", "path", "expect", "script")


def remove_virtual_service(config: Config, label: str) -> Config:
    services = _services(config)
    del services[_find(services, label, "label", "virtual service")]
    return _rebuild(services)


def add_real_server(config: Config, service: str, data: Any) -> Config:
    services = _services(config)
    vs = services[_find(services, service, "virtual_service", "virtual service")]
    vs["real_servers"].append(_object(data, "real server"))
    return _rebuild(services)


def modify_real_server(config: Config, service: str, label: str, changes: Any) -> Config:
    services = _services(config)
    vs = services[_find(services, service, "virtual_service", "virtual service")]
    index = _find(vs["real_servers"], label, "label", f"real server in {service!r} called")
    vs["real_servers"][index] = _merge(vs["real_servers"][index], _object(changes, "real server"))
    return _rebuild(services)


def remove_real_server(config: Config, service: str, label: str) -> Config:
    services = _services(config)
    vs = services[_find(services, service, "virtual_service", "virtual service")]
    del vs["real_servers"][_find(vs["real_servers"], label, "label", "real server")]
    return _rebuild(services)


def _merge(current: Document, changes: Document) -> Document:
    """Apply a partial change; nested sections (health_check, persistence) merge too."""
    merged = dict(current)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged
