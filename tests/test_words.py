"""A change in the guide's words, as the Commit box, View Configuration and `balancer changes`
list it: every setting named as its form field is, every value as the form shows it."""

from __future__ import annotations

from typing import Any

import pytest

from balancer import words
from balancer.model import HealthCheck, Persistence, RealServer, VirtualService
from balancer.model.types import Endpoint
from balancer.plan import Change, changes
from tests.test_plan import config, document, edited


def said(path: list[Any], value: Any) -> list[str]:
    return [words.said(c) for c in changes(config(document()), edited(path, value))]


def test_everything_added_to_nothing_names_each_service_its_address_and_servers() -> None:
    assert [words.said(c) for c in changes(None, config(document()))] == [
        "Add virtual service CyberArk-PSM at 192.168.94.100, port 3389, "
        "with real servers PSM1, PSM2",
        "Add virtual service CyberArk-PSM-Web at 192.168.94.101, port 443, "
        "with real servers PSM1, PSM2",
    ]


def test_services_added_and_removed() -> None:
    after = document()
    after["virtual_services"][1] = {"label": "Gateway", "ip": "2001:db8::1", "ports": "80,443"}
    assert [words.said(c) for c in changes(config(document()), config(after))] == [
        "Remove virtual service CyberArk-PSM-Web",
        "Add virtual service Gateway at 2001:db8::1, ports 80,443",
    ]


def test_real_servers_added_and_removed() -> None:
    after = document()
    servers = after["virtual_services"][0]["real_servers"]
    del servers[0]
    servers += [
        {"label": "PSM3", "ip": "192.168.94.107", "port": 3389},
        {"label": "PSM4", "ip": "192.168.94.108"},  # no port: the client's
    ]
    assert [words.said(c) for c in changes(config(document()), config(after))] == [
        "Remove real server PSM1 from CyberArk-PSM",
        "Add real server PSM3 to CyberArk-PSM at 192.168.94.107, port 3389",
        "Add real server PSM4 to CyberArk-PSM at 192.168.94.108",
    ]


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ([0, "real_servers", 0, "weight"], 50,
         "Change Weight of real server PSM1 in CyberArk-PSM from 100 to 50"),
        ([0, "real_servers", 1, "ip"], "192.168.94.9",
         "Change Real Server IP Address of real server PSM2 in CyberArk-PSM "
         "from 192.168.94.106 to 192.168.94.9"),
        ([0, "real_servers", 0, "max_connections"], 10,
         "Change Max Connections of real server PSM1 in CyberArk-PSM from 0 to 10"),
        ([0, "real_servers", 0, "state"], "drain", "Drain real server PSM1 in CyberArk-PSM"),
        ([0, "real_servers", 0, "state"], "halt", "Halt real server PSM1 in CyberArk-PSM"),
        ([0, "ports"], "3389,3390", "Change Ports of CyberArk-PSM from 3389 to 3389,3390"),
        ([0, "ports"], "3389-3399", "Change Ports of CyberArk-PSM from 3389 to 3389-3399"),
        ([0, "ip"], "192.168.94.99",
         "Change IP Address of CyberArk-PSM from 192.168.94.100 to 192.168.94.99"),
        ([0, "balancing"], "least_connections",
         "Change Balance Mode of CyberArk-PSM from Weighted Round Robin "
         "to Weighted Least Connections"),
        ([0, "persistence"], {"mode": "none"},
         "Change Persistence Mode of CyberArk-PSM from Source IP to None"),
        ([0, "persistence"], {"timeout": 600},
         "Change Persistence Timeout of CyberArk-PSM from 1800 to 600"),
        ([0, "client_timeout"], 60, "Change Client Timeout of CyberArk-PSM from 43200 to 60"),
        ([0, "connect_timeout"], 2.5, "Change Connect Timeout of CyberArk-PSM from 4 to 2.5"),
        ([0, "health_check", "path"], "/health",
         "Change Request to Send of CyberArk-PSM from /psm/api/health to /health"),
        ([0, "health_check", "interval"], 10,
         "Change Check Interval of CyberArk-PSM from 4 to 10"),
        ([0, "health_check", "also_check_service_port"], True,
         "Change Also Check Service Port of CyberArk-PSM from off to on"),
    ],
)  # fmt: skip
def test_a_setting_changed(path: list[Any], value: Any, expected: str) -> None:
    assert said(path, value) == [expected]


def test_a_check_type_and_method_in_the_guides_choices() -> None:
    check = {"path": "/psm/api/health", "expect": "PASS", "port": 443}
    connect = said([0, "health_check"], {"type": "connect"})
    assert (
        connect[0] == "Change Health Checks of CyberArk-PSM from Negotiate HTTPS to Connect to Port"
    )
    head = said([0, "health_check"], {**check, "type": "http", "method": "HEAD", "expect": None})
    assert head == [
        "Change Health Checks of CyberArk-PSM from Negotiate HTTPS to Negotiate HTTP",
        "Change Health Check Method of CyberArk-PSM from GET to HEAD",
        "Clear Response Expected of CyberArk-PSM (was PASS)",
    ]
    assert words.check_type("https", "HEAD") == "Negotiate HTTPS (HEAD)"
    assert words.check_type("none") == "No Checks, Always On"


def test_a_setting_set_where_it_had_none_or_cleared() -> None:
    assert said([0, "health_check", "port"], None) == ["Clear Check Port of CyberArk-PSM (was 443)"]
    assert said([0, "real_servers", 0, "port"], None) == [
        "Clear Real Server Port of real server PSM1 in CyberArk-PSM (was 3389)"
    ]
    back = changes(edited([0, "health_check", "port"], None), config(document()))
    assert [words.said(c) for c in back] == ["Set Check Port of CyberArk-PSM to 443"]


def test_a_fallback_server_set_changed_and_cleared() -> None:
    fallback = {"ip": "192.168.94.200", "port": 3389}
    assert said([0, "fallback"], fallback) == [
        "Set Fallback Server of CyberArk-PSM to 192.168.94.200, port 3389"
    ]
    moved = changes(
        edited([0, "fallback"], fallback), edited([0, "fallback"], {**fallback, "port": 80})
    )
    assert [words.said(c) for c in moved] == [
        "Change Fallback Server Port of CyberArk-PSM from 3389 to 80"
    ]
    cleared = changes(edited([0, "fallback"], fallback), config(document()))
    assert [words.said(c) for c in cleared] == [
        "Clear Fallback Server of CyberArk-PSM (was 192.168.94.200, port 3389)"
    ]


def test_a_change_outside_the_virtual_services_keeps_its_own_name() -> None:
    assert words.said(Change("colour", None, "blue", False)) == "Change colour from none to blue"


def _fields(model: type[Any], prefix: str = "") -> list[str]:
    """Every setting's path as a change names it; a fallback is also set or cleared whole."""
    nested = {"persistence": Persistence, "health_check": HealthCheck, "fallback": Endpoint}
    found = ["fallback"] if not prefix else []
    for field in model.model_fields:
        if field in nested and not prefix:
            found += _fields(nested[field], f"{field}.")
        elif field not in ("label", "real_servers", "state"):  # state: Drain, Halt, Online
            found.append(prefix + field)
    return found


@pytest.mark.parametrize(("model", "server"), [(VirtualService, False), (RealServer, True)])
def test_every_setting_has_a_name_an_operator_knows(model: type[Any], server: bool) -> None:
    """A field added to the model must get the guide's name, not show its own."""
    for field in _fields(model):
        assert words.name(field, server=server)[0].isupper(), field
        assert "_" not in words.name(field, server=server), field
