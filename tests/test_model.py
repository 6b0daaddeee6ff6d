"""The model alone: ports, addresses, labels, weights, health-check rules, defaults, round trips."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from balancer import defaults
from balancer.model import (
    Balancing,
    CheckType,
    Config,
    Endpoint,
    HealthCheck,
    HttpMethod,
    NodeSettings,
    Pair,
    Persistence,
    PersistenceMode,
    RealServer,
    RealServerState,
    VirtualService,
)
from balancer.model.types import each_port, format_ports


def vip(**settings: Any) -> VirtualService:
    document: dict[str, Any] = {"label": "CyberArk-PSM", "ip": "192.168.94.100", "ports": "3389"}
    return VirtualService.model_validate({**document, **settings})


def errors(error: ValidationError) -> str:
    return "\n".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())


# --- ports ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "ranges", "canonical"),
    [
        ("3389", ((3389, 3389),), "3389"),
        ("3389,3390", ((3389, 3389), (3390, 3390)), "3389,3390"),
        ("8000-8010", ((8000, 8010),), "8000-8010"),
        (3389, ((3389, 3389),), "3389"),
        ([3389, "8000-8010"], ((3389, 3389), (8000, 8010)), "3389,8000-8010"),
        ((443, 3389), ((443, 443), (3389, 3389)), "443,3389"),
        (" 3389 , 3390 ", ((3389, 3389), (3390, 3390)), "3389,3390"),
        ("8000 - 8010", ((8000, 8010),), "8000-8010"),
        ("\t3389,\n3390 ", ((3389, 3389), (3390, 3390)), "3389,3390"),
        ("3390,3389", ((3389, 3389), (3390, 3390)), "3389,3390"),  # sorted
        ("9000-9001,443", ((443, 443), (9000, 9001)), "443,9000-9001"),
        ("1,65535", ((1, 1), (65535, 65535)), "1,65535"),
        ("80-80", ((80, 80),), "80"),
        ([[8000, 8010]], ((8000, 8010),), "8000-8010"),  # what model_dump(mode="python") gives
    ],
)
def test_ports_accepted(written: Any, ranges: tuple[tuple[int, int], ...], canonical: str) -> None:
    service = vip(ports=written)
    assert service.ports == ranges
    assert format_ports(service.ports) == canonical
    assert service.model_dump(mode="json")["ports"] == canonical
    assert service.model_dump()["ports"] == canonical
    assert vip(ports=canonical).ports == ranges, "the canonical string reads back the same"


@pytest.mark.parametrize(
    ("written", "reason"),
    [
        ("0", "outside 1..65535"),
        (0, "outside 1..65535"),
        ("70000", "outside 1..65535"),
        (70000, "outside 1..65535"),
        ("0-10", "outside 1..65535"),
        ("65000-65536", "outside 1..65535"),
        ("abc", "is not a port"),
        ("10-5", "runs backwards"),
        ("3389,3389", "listed twice"),
        ([3389, 3389], "listed twice"),
        ("3000-3400,3389", "listed twice"),
        ("8000-8010,8010-8020", "listed twice"),  # touching at one port is an overlap
        ("", "is not a port"),
        ("   ", "is not a port"),
        ([], "at least one port"),
        ("3389,", "is not a port"),
        (",3389", "is not a port"),
        ("3389-", "is not a port"),
        ("-3389", "is not a port"),
        ("1-2-3", "is not a port"),
        ("+3389", "is not a port"),
        ("3389.0", "is not a port"),
        ("٣٣٨٩", "is not a port"),  # Arabic-Indic digits are digits to str.isdigit, not to us
        ("²", "is not a port"),  # a digit to str.isdigit that int() refuses
        (True, "ports must be like"),
        (3389.0, "ports must be like"),
        (None, "ports must be like"),
        ([True], "is not a port"),
        ([[1, 2, 3]], "is not a port"),
    ],
)
def test_ports_rejected(written: Any, reason: str) -> None:
    with pytest.raises(ValidationError) as caught:
        vip(ports=written)
    assert [e["loc"] for e in caught.value.errors()] == [("ports",)]
    assert reason in errors(caught.value)


def test_each_port_lists_every_port_of_every_range() -> None:
    assert each_port(vip(ports="443,8000-8003").ports) == [443, 8000, 8001, 8002, 8003]


# --- addresses -----------------------------------------------------------------------------

ADDRESS_HOLDERS: dict[str, Callable[[Any], Any]] = {
    "virtual service": lambda ip: vip(ip=ip).ip,
    "real server": lambda ip: RealServer(label="PSM1", ip=ip).ip,
    "fallback": lambda ip: vip(fallback={"ip": ip, "port": 80}).fallback.ip,  # type: ignore[union-attr]
    "endpoint": lambda ip: Endpoint(ip=ip, port=80).ip,
}


@pytest.mark.parametrize("holder", ADDRESS_HOLDERS)
@pytest.mark.parametrize(
    ("written", "canonical"),
    [
        ("192.168.94.100", "192.168.94.100"),
        (" 10.0.0.1 ", "10.0.0.1"),
        ("2001:db8::10", "2001:db8::10"),
        ("2001:DB8:0:0:0:0:0:10", "2001:db8::10"),
        ("::1", "::1"),
    ],
)
def test_ipv4_and_ipv6_addresses_accepted(holder: str, written: str, canonical: str) -> None:
    assert str(ADDRESS_HOLDERS[holder](written)) == canonical


@pytest.mark.parametrize("holder", ADDRESS_HOLDERS)
@pytest.mark.parametrize(
    "written",
    [
        "192.168.94",
        "192.168.94.256",
        "192.168.094.100",  # leading zeros are ambiguous (octal?) and refused
        "psm1.example.com",
        "2001:db8::10::1",
        "",
        "192.168.94.100:3389",
    ],
)
def test_bad_addresses_rejected_with_a_clear_message(holder: str, written: str) -> None:
    with pytest.raises(ValidationError) as caught:
        ADDRESS_HOLDERS[holder](written)
    assert f"{written!r} is not an IPv4 or IPv6 address" in errors(caught.value)


@pytest.mark.parametrize("holder", ADDRESS_HOLDERS)
@pytest.mark.parametrize("written", [1, 3232235876, True, None, 1.5, ["10.0.0.1"]])
def test_addresses_that_are_not_strings_rejected(holder: str, written: Any) -> None:
    """A JSON number must not become an address: {"ip": 1} is not 0.0.0.1."""
    with pytest.raises(ValidationError) as caught:
        ADDRESS_HOLDERS[holder](written)
    assert [e["loc"][-1] for e in caught.value.errors()] == ["ip"]
    assert f"{written!r} is not an IPv4 or IPv6 address" in errors(caught.value)


def test_address_serialises_as_a_string() -> None:
    dumped = vip(ip="2001:db8::1", fallback={"ip": "10.0.0.9", "port": 8080}).model_dump()
    assert dumped["ip"] == "2001:db8::1"
    assert dumped["fallback"] == {"ip": "10.0.0.9", "port": 8080}


# --- labels --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "label", ["CyberArk-PSM", "CyberArk-PSM-Web", "PSM1", "a.b_c", "1", "x" * 64, "9-lives"]
)
def test_labels_accepted(label: str) -> None:
    assert vip(label=label).label == label
    assert RealServer(label=label, ip="10.0.0.1").label == label


def test_label_surrounding_whitespace_is_trimmed() -> None:
    assert RealServer(label=" PSM1 ", ip="10.0.0.1").label == "PSM1"


@pytest.mark.parametrize(
    "label",
    ["", " ", "PSM 1", "x" * 65, "-PSM", ".PSM", "_PSM", "PSM/1", "PSM:1", "PSM\n1", "PSMé"],
)
def test_labels_rejected(label: str) -> None:
    with pytest.raises(ValidationError) as caught:
        vip(label=label)
    assert [e["loc"] for e in caught.value.errors()] == [("label",)]
    with pytest.raises(ValidationError):
        RealServer(label=label, ip="10.0.0.1")


# --- real servers --------------------------------------------------------------------------


@pytest.mark.parametrize("weight", [0, 1, 100, 256])
def test_weight_accepted(weight: int) -> None:
    assert RealServer(label="PSM1", ip="10.0.0.1", weight=weight).weight == weight


@pytest.mark.parametrize("weight", [-1, 257, 1000])
def test_weight_rejected(weight: int) -> None:
    with pytest.raises(ValidationError) as caught:
        RealServer(label="PSM1", ip="10.0.0.1", weight=weight)
    assert [e["loc"] for e in caught.value.errors()] == [("weight",)]


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"port": 0}, "port"),
        ({"port": 65536}, "port"),
        ({"state": "offline"}, "state"),
        ({"max_connections": -1}, "max_connections"),
    ],
)
def test_real_server_settings_rejected(settings: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        RealServer.model_validate({"label": "PSM1", "ip": "10.0.0.1", **settings})
    assert [e["loc"] for e in caught.value.errors()] == [(field,)]


@pytest.mark.parametrize(("port", "client_port", "target"), [(None, 3389, 3389), (443, 3389, 443)])
def test_target_port(port: int | None, client_port: int, target: int) -> None:
    assert RealServer(label="PSM1", ip="10.0.0.1", port=port).target_port(client_port) == target


@pytest.mark.parametrize("state", ["online", "drain", "halt"])
def test_real_server_states(state: str) -> None:
    assert RealServer(label="PSM1", ip="10.0.0.1", state=state).state is RealServerState(state)


# --- health checks -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"type": "none"},
        {"type": "connect", "port": 443},
        {"type": "http", "path": "/"},
        {"type": "https", "path": "/psm/api/health", "expect": "PASS"},
        {"type": "https", "path": "/health?full=1", "expect": "status: ok"},
        {"type": "http", "method": "HEAD", "path": "/ping"},
        {"type": "external", "script": "/usr/local/bin/check-psm"},
        {"type": "connect", "also_check_service_port": True},
        {"interval": 0.1, "timeout": 0.1, "rise": 1, "fall": 1},
        {"interval": 3600, "timeout": 3600, "rise": 100, "fall": 100},
    ],
)
def test_health_checks_accepted(settings: dict[str, Any]) -> None:
    check = HealthCheck.model_validate(settings)
    for key, value in settings.items():
        assert getattr(check, key) == value


@pytest.mark.parametrize(
    ("settings", "field", "reason"),
    [
        ({"type": "https"}, "path", "needs a path"),
        ({"type": "http", "path": ""}, "path", "needs a path"),
        ({"type": "https", "path": "psm/api/health"}, "path", "must start with /"),
        ({"type": "http", "path": "/a b"}, "path", "must start with /"),
        ({"type": "http", "path": "/a\r\nHost: x"}, "path", "must start with /"),
        ({"type": "http", "method": "HEAD", "path": "/", "expect": "PASS"}, "expect", "HEAD"),
        ({"type": "connect", "path": "/psm/api/health"}, "path", "only negotiate"),
        ({"type": "connect", "expect": "PASS"}, "expect", "only negotiate"),
        ({"type": "none", "path": "/"}, "path", "only negotiate"),
        ({"type": "external", "path": "/"}, "path", "only negotiate"),
        ({"type": "external"}, "script", "needs the path of a script"),
        ({"type": "connect", "script": "/bin/true"}, "script", "only an external check"),
        ({"type": "https", "path": "/", "script": "/bin/true"}, "script", "only an external"),
        ({"type": "http", "path": "/", "expect": "PA\nSS"}, "expect", "one line"),
    ],
)
def test_health_check_rules(settings: dict[str, Any], field: str, reason: str) -> None:
    with pytest.raises(ValidationError) as caught:
        HealthCheck.model_validate(settings)
    message = errors(caught.value)
    assert f"{field}: " in message
    assert reason in message


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("interval", 0.09),
        ("interval", 3601),
        ("timeout", 0),
        ("timeout", 3601),
        ("rise", 0),
        ("rise", 101),
        ("fall", 0),
        ("fall", 101),
        ("port", 0),
        ("port", 65536),
        ("type", "ping"),
        ("method", "POST"),
    ],
)
def test_health_check_bounds(field: str, value: Any) -> None:
    with pytest.raises(ValidationError) as caught:
        HealthCheck.model_validate({field: value})
    assert [e["loc"] for e in caught.value.errors()] == [(field,)]


# --- virtual services ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("protocol", "udp"),
        ("balancing", "random"),
        ("client_timeout", 0.5),
        ("client_timeout", 7 * 24 * 3600 + 1),
        ("server_timeout", 0),
        ("connect_timeout", 0.05),
        ("connect_timeout", 3601),
        ("retries", 0),
        ("retries", 17),
        ("persistence", {"mode": "cookie"}),
        ("persistence", {"timeout": 0.5}),
        ("persistence", {"table_size": 0}),
        ("fallback", {"ip": "10.0.0.1"}),
        ("fallback", {"ip": "10.0.0.1", "port": 0}),
    ],
)
def test_virtual_service_settings_rejected(field: str, value: Any) -> None:
    with pytest.raises(ValidationError) as caught:
        vip(**{field: value})
    assert {e["loc"][0] for e in caught.value.errors()} == {field}


def test_lookups_by_label() -> None:
    service = vip(real_servers=[{"label": "PSM1", "ip": "10.0.0.1"}])
    config = Config(virtual_services=(service,))
    assert config.virtual_service("CyberArk-PSM") is service
    assert config.virtual_service("nope") is None
    assert service.real_server("PSM1") is service.real_servers[0]
    assert service.real_server("PSM2") is None


# --- every model: unknown fields, frozen ---------------------------------------------------

MINIMAL: list[tuple[type[BaseModel], dict[str, Any]]] = [
    (Config, {}),
    (VirtualService, {"label": "A", "ip": "10.0.0.1", "ports": "1"}),
    (RealServer, {"label": "A", "ip": "10.0.0.1"}),
    (HealthCheck, {}),
    (Persistence, {}),
    (Endpoint, {"ip": "10.0.0.1", "port": 1}),
    (NodeSettings, {"hostname": "lb1"}),
]


@pytest.mark.parametrize(("model", "minimal"), MINIMAL, ids=lambda m: getattr(m, "__name__", ""))
def test_unknown_fields_rejected(model: type[BaseModel], minimal: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as caught:
        model.model_validate({**minimal, "wieght": 5})
    assert [(e["loc"], e["type"]) for e in caught.value.errors()] == [
        (("wieght",), "extra_forbidden")
    ]


@pytest.mark.parametrize(("model", "minimal"), MINIMAL, ids=lambda m: getattr(m, "__name__", ""))
def test_models_are_frozen(model: type[BaseModel], minimal: dict[str, Any]) -> None:
    instance = model.model_validate(minimal)
    field = next(iter(model.model_fields))
    with pytest.raises(ValidationError):
        setattr(instance, field, getattr(instance, field))


def test_frozen_models_are_hashable_values() -> None:
    assert vip() == vip()
    assert hash(vip()) == hash(vip())
    assert vip() != vip(ports="3390")


# --- defaults: what "leave all other settings at their default value" gives ------------------


def test_virtual_service_defaults() -> None:
    service = vip()
    assert service.protocol == "tcp"
    assert service.balancing is Balancing.ROUND_ROBIN
    assert service.client_timeout == service.server_timeout == 12 * 3600
    assert service.connect_timeout == 4
    assert service.retries == 3
    assert service.fallback is None
    assert service.real_servers == ()
    assert service.persistence == Persistence(mode=PersistenceMode.SOURCE_IP, timeout=1800)
    assert service.persistence.table_size == defaults.PERSISTENCE_TABLE_SIZE


def test_health_check_defaults() -> None:
    check = vip().health_check
    assert check.type is CheckType.CONNECT
    assert check.method is HttpMethod.GET
    assert (check.interval, check.timeout, check.rise, check.fall) == (4, 4, 2, 3)
    assert (check.path, check.expect, check.port, check.script) == (None, None, None, None)
    assert check.also_check_service_port is False


def test_real_server_defaults() -> None:
    server = RealServer(label="PSM1", ip="192.168.94.105")
    assert server.weight == 100
    assert server.state is RealServerState.ONLINE
    assert server.port is None
    assert server.max_connections == 0


def test_node_defaults() -> None:
    node = NodeSettings()
    assert node.hostname
    assert (node.engine, node.https_port, node.http_port) == ("builtin", 9443, None)


_OWNERS: dict[str, Any] = {
    "virtual service": vip(),
    "persistence": Persistence(),
    "health check": HealthCheck(),
    "real server": RealServer(label="PSM1", ip="10.0.0.1"),
    "node": NodeSettings(),
    "pair": Pair(role="primary", local_address="198.18.0.11", peer_address="198.18.0.12"),
}


@pytest.mark.parametrize("default", defaults.DEFAULTS, ids=lambda d: d.setting)
def test_defaults_table_matches_the_model(default: defaults.Default) -> None:
    """The README's defaults come from DEFAULTS; the model must agree with every row."""
    owner, field = default.setting.split(": ")
    assert getattr(_OWNERS[owner], field) == default.value


# --- documents -----------------------------------------------------------------------------

FULL = {
    "virtual_services": [
        {
            "label": "CyberArk-PSM",
            "ip": "192.168.94.100",
            "ports": "3389",
            "balancing": "least_connections",
            "persistence": {"mode": "source_ip", "timeout": 3600, "table_size": 5000},
            "health_check": {
                "type": "https",
                "path": "/psm/api/health",
                "expect": "PASS",
                "port": 443,
                "also_check_service_port": True,
                "interval": 2,
                "timeout": 1.5,
                "rise": 3,
                "fall": 4,
            },
            "fallback": {"ip": "192.168.94.200", "port": 3389},
            "client_timeout": 600,
            "server_timeout": 900,
            "connect_timeout": 2.5,
            "retries": 2,
            "real_servers": [
                {"label": "PSM1", "ip": "192.168.94.105", "port": 3389},
                {"label": "PSM2", "ip": "2001:db8::106", "weight": 0, "state": "drain"},
                {"label": "PSM3", "ip": "192.168.94.107", "state": "halt", "max_connections": 9},
            ],
        },
        {
            "label": "ranges",
            "ip": "2001:db8::100",
            "ports": "8000-8010,443",
            "persistence": {"mode": "none"},
            "health_check": {"type": "external", "script": "/opt/check.sh"},
        },
    ]
}


def test_json_round_trip_of_a_full_config() -> None:
    config = Config.model_validate(FULL)
    text = config.model_dump_json()
    assert Config.model_validate_json(text) == config
    assert Config.model_validate(config.model_dump()) == config
    assert Config.model_validate(config.model_dump(mode="json")) == config
    dumped = config.model_dump(mode="json")
    assert dumped["virtual_services"][1]["ports"] == "443,8000-8010"
    assert dumped["virtual_services"][0]["real_servers"][1]["ip"] == "2001:db8::106"
    assert dumped["virtual_services"][0]["balancing"] == "least_connections"
