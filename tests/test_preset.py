"""The CyberArk PSM preset against the guide's section 10: two VIPs, TCP mode, source IP,
Negotiate HTTPS GET /psm/api/health expecting PASS on port 443, everything else at its default."""

from __future__ import annotations

from typing import Any

import pytest

from balancer.model import (
    Balancing,
    CheckType,
    Config,
    HealthCheck,
    HttpMethod,
    PersistenceMode,
    RealServer,
    VirtualService,
)
from balancer.presets.psm import add_psm, psm_services
from balancer.validate import Invalid, parse

SERVERS = [("PSM1", "192.168.94.105"), ("PSM2", "192.168.94.106")]
GUIDE: dict[str, Any] = {
    "rdp_vip": "192.168.94.100",
    "web_vip": "192.168.94.101",
    "servers": SERVERS,
}


def built(**arguments: Any) -> Config:
    return add_psm(Config(), **{**GUIDE, **arguments})


def test_the_guides_two_virtual_services() -> None:
    rdp, web = built().virtual_services
    assert (rdp.label, str(rdp.ip), rdp.ports) == (
        "CyberArk-PSM",
        "192.168.94.100",
        ((3389, 3389),),
    )
    assert (web.label, str(web.ip), web.ports) == (
        "CyberArk-PSM-Web",
        "192.168.94.101",
        ((443, 443),),
    )


@pytest.mark.parametrize("index", [0, 1], ids=["CyberArk-PSM", "CyberArk-PSM-Web"])
def test_each_service_as_the_guide_sets_it(index: int) -> None:
    vs = built().virtual_services[index]
    assert vs.protocol == "tcp"
    assert vs.persistence.mode is PersistenceMode.SOURCE_IP
    assert vs.balancing is Balancing.ROUND_ROBIN
    check = vs.health_check
    assert (check.type, check.method, check.path, check.expect) == (
        CheckType.HTTPS,
        HttpMethod.GET,
        "/psm/api/health",
        "PASS",
    )
    assert check.port == 443, "the RDP service does not speak HTTPS: check the PSM's port 443"
    assert check.also_check_service_port is False


def test_real_servers_take_the_service_port() -> None:
    rdp, web = built().virtual_services
    assert [(rs.label, str(rs.ip), rs.port) for rs in rdp.real_servers] == [
        ("PSM1", "192.168.94.105", 3389),
        ("PSM2", "192.168.94.106", 3389),
    ]
    assert [(rs.label, str(rs.ip), rs.port) for rs in web.real_servers] == [
        ("PSM1", "192.168.94.105", 443),
        ("PSM2", "192.168.94.106", 443),
    ]


def test_everything_else_is_left_at_its_default() -> None:
    """The guide's "leave all other settings at their default value"."""
    for vs in built().virtual_services:
        default = VirtualService(label=vs.label, ip=vs.ip, ports=vs.ports)
        guide = {"balancing", "persistence", "health_check", "real_servers"}
        assert vs.model_dump(exclude=guide) == default.model_dump(exclude=guide)
        assert vs.persistence.model_dump(exclude={"mode"}) == default.persistence.model_dump(
            exclude={"mode"}
        )
        set_by_guide = {"type", "method", "path", "expect", "port", "also_check_service_port"}
        assert vs.health_check.model_dump(exclude=set_by_guide) == HealthCheck().model_dump(
            exclude=set_by_guide
        )
        for rs in vs.real_servers:
            plain = RealServer(label=rs.label, ip=rs.ip, port=rs.port)
            assert rs == plain


def test_recommended() -> None:
    for vs in built(recommended=True).virtual_services:
        assert vs.balancing is Balancing.LEAST_CONNECTIONS
        assert vs.health_check.also_check_service_port is True
        assert (vs.health_check.path, vs.health_check.expect) == ("/psm/api/health", "PASS")
        assert vs.persistence.mode is PersistenceMode.SOURCE_IP


@pytest.mark.parametrize(
    ("arguments", "rdp_port", "web_port", "check_port"),
    [
        ({}, 3389, 443, 443),
        ({"rdp_port": 13389}, 13389, 443, 443),
        ({"web_port": 8443}, 3389, 8443, 8443),  # the check follows the web port
        ({"web_port": 8443, "check_port": 9443}, 3389, 8443, 9443),
        ({"check_port": 4443}, 3389, 443, 4443),
    ],
)
def test_custom_ports(
    arguments: dict[str, Any], rdp_port: int, web_port: int, check_port: int
) -> None:
    rdp, web = built(**arguments).virtual_services
    assert rdp.ports == ((rdp_port, rdp_port),)
    assert web.ports == ((web_port, web_port),)
    assert {rs.port for rs in rdp.real_servers} == {rdp_port}
    assert {rs.port for rs in web.real_servers} == {web_port}
    assert rdp.health_check.port == web.health_check.port == check_port


def test_psm_services_are_documents_that_parse() -> None:
    documents = psm_services(**GUIDE)
    assert [d["label"] for d in documents] == ["CyberArk-PSM", "CyberArk-PSM-Web"]
    assert parse({"virtual_services": documents}) == built()


def test_ipv6_and_one_vip_for_both() -> None:
    config = built(
        rdp_vip="2001:db8::100", web_vip="2001:db8::100", servers=[("PSM1", "2001:db8::105")]
    )
    assert {str(vs.ip) for vs in config.virtual_services} == {"2001:db8::100"}


def test_no_servers_yet() -> None:
    assert all(vs.real_servers == () for vs in built(servers=[]).virtual_services)


def test_added_beside_other_services() -> None:
    other = parse({"virtual_services": [{"label": "SSH", "ip": "192.168.94.100", "ports": "22"}]})
    config = add_psm(other, **GUIDE)
    assert [vs.label for vs in config.virtual_services] == [
        "SSH",
        "CyberArk-PSM",
        "CyberArk-PSM-Web",
    ]


def test_adding_twice_is_a_duplicate_label() -> None:
    once = built()
    with pytest.raises(Invalid) as caught:
        add_psm(once, **{**GUIDE, "rdp_vip": "10.0.0.100", "web_vip": "10.0.0.101"})
    assert [(p.field, p.reason) for p in caught.value.problems] == [
        ("virtual_services[CyberArk-PSM].label", "'CyberArk-PSM' is used twice")
    ]


def test_a_clash_with_an_existing_service_is_reported() -> None:
    other = parse({"virtual_services": [{"label": "RDP", "ip": "192.168.94.100", "ports": "3389"}]})
    with pytest.raises(Invalid) as caught:
        add_psm(other, **GUIDE)
    assert [p.field for p in caught.value.problems] == ["virtual_services[CyberArk-PSM].ports"]


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"rdp_vip": "192.168.94"}, "ip"),
        ({"servers": [("PSM 1", "192.168.94.105")]}, "real_servers[PSM 1].label"),
        ({"servers": [("PSM1", "nowhere")]}, "real_servers[PSM1].ip"),
    ],
)
def test_bad_input_is_invalid(arguments: dict[str, Any], field: str) -> None:
    with pytest.raises(Invalid) as caught:
        built(**arguments)
    assert [p.field for p in caught.value.problems] == [f"virtual_services[CyberArk-PSM].{field}"]
