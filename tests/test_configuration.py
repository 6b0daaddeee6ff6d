"""Edits of the configuration: each returns a new checked Config, or raises Invalid or Missing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from balancer.configuration import (
    Missing,
    add_real_server,
    add_virtual_service,
    modify_real_server,
    modify_virtual_service,
    remove_real_server,
    remove_virtual_service,
)
from balancer.model import CheckType, Config, RealServerState
from balancer.validate import Invalid

PSM_CHECK = {"type": "https", "path": "/psm/api/health", "expect": "PASS", "port": 443}


def base() -> Config:
    return Config.model_validate(
        {
            "virtual_services": [
                {
                    "label": "CyberArk-PSM",
                    "ip": "192.168.94.100",
                    "ports": "3389",
                    "health_check": PSM_CHECK,
                    "real_servers": [
                        {"label": "PSM1", "ip": "192.168.94.105", "port": 3389},
                        {"label": "PSM2", "ip": "192.168.94.106", "port": 3389},
                    ],
                }
            ]
        }
    )


WEB = {"label": "CyberArk-PSM-Web", "ip": "192.168.94.101", "ports": "443"}


def fields(error: Invalid) -> list[str]:
    return [p.field for p in error.problems]


# --- virtual services ----------------------------------------------------------------------


def test_add_virtual_service() -> None:
    before = base()
    after = add_virtual_service(before, WEB)
    assert [vs.label for vs in after.virtual_services] == ["CyberArk-PSM", "CyberArk-PSM-Web"]
    web = after.virtual_service("CyberArk-PSM-Web")
    assert web is not None
    assert web.health_check.type is CheckType.CONNECT, "what is not given takes its default"
    assert before == base(), "the input is unchanged"
    assert WEB == {"label": "CyberArk-PSM-Web", "ip": "192.168.94.101", "ports": "443"}


def test_add_virtual_service_to_an_empty_config() -> None:
    assert [vs.label for vs in add_virtual_service(Config(), WEB).virtual_services] == [
        "CyberArk-PSM-Web"
    ]


def test_modify_virtual_service() -> None:
    before = base()
    after = modify_virtual_service(before, "CyberArk-PSM", {"ports": "3389,3390", "retries": 1})
    vs = after.virtual_services[0]
    assert (vs.ports, vs.retries) == (((3389, 3389), (3390, 3390)), 1)
    assert vs.real_servers == before.virtual_services[0].real_servers, "the rest is kept"
    assert vs.health_check == before.virtual_services[0].health_check
    assert before == base()


def test_modify_merges_nested_sections() -> None:
    after = modify_virtual_service(base(), "CyberArk-PSM", {"health_check": {"interval": 10}})
    check = after.virtual_services[0].health_check
    assert check.interval == 10
    assert (check.type, check.path, check.expect, check.port) == (
        CheckType.HTTPS,
        "/psm/api/health",
        "PASS",
        443,
    )
    after = modify_virtual_service(base(), "CyberArk-PSM", {"persistence": {"timeout": 60}})
    assert after.virtual_services[0].persistence.mode == "source_ip"
    assert after.virtual_services[0].persistence.timeout == 60


def test_modify_can_clear_a_setting() -> None:
    after = modify_virtual_service(base(), "CyberArk-PSM", {"health_check": {"port": None}})
    assert after.virtual_services[0].health_check.port is None


def test_modify_can_rename() -> None:
    after = modify_virtual_service(base(), "CyberArk-PSM", {"label": "RDP"})
    assert [vs.label for vs in after.virtual_services] == ["RDP"]


def test_remove_virtual_service() -> None:
    before = add_virtual_service(base(), WEB)
    after = remove_virtual_service(before, "CyberArk-PSM")
    assert [vs.label for vs in after.virtual_services] == ["CyberArk-PSM-Web"]
    assert len(before.virtual_services) == 2
    assert remove_virtual_service(after, "CyberArk-PSM-Web") == Config()


# --- real servers --------------------------------------------------------------------------


def test_add_real_server() -> None:
    before = base()
    after = add_real_server(before, "CyberArk-PSM", {"label": "PSM3", "ip": "2001:db8::107"})
    servers = after.virtual_services[0].real_servers
    assert [rs.label for rs in servers] == ["PSM1", "PSM2", "PSM3"]
    assert (str(servers[2].ip), servers[2].weight, servers[2].port) == ("2001:db8::107", 100, None)
    assert before == base()


def test_modify_real_server() -> None:
    before = base()
    after = modify_real_server(before, "CyberArk-PSM", "PSM2", {"weight": 0, "state": "drain"})
    psm1, psm2 = after.virtual_services[0].real_servers
    assert (psm2.weight, psm2.state, psm2.ip, psm2.port) == (
        0,
        RealServerState.DRAIN,
        before.virtual_services[0].real_servers[1].ip,
        3389,
    )
    assert psm1 == before.virtual_services[0].real_servers[0]
    assert before == base()


def test_remove_real_server() -> None:
    before = base()
    after = remove_real_server(before, "CyberArk-PSM", "PSM1")
    assert [rs.label for rs in after.virtual_services[0].real_servers] == ["PSM2"]
    after = remove_real_server(after, "CyberArk-PSM", "PSM2")
    assert after.virtual_services[0].real_servers == ()
    assert before == base()


# --- what is not there ---------------------------------------------------------------------

MISSING: list[tuple[Callable[[Config], Config], str, str]] = [
    (lambda c: modify_virtual_service(c, "Nope", {"retries": 1}), "label", "Nope"),
    (lambda c: remove_virtual_service(c, "Nope"), "label", "Nope"),
    (lambda c: add_real_server(c, "Nope", {"label": "X"}), "virtual_service", "Nope"),
    (lambda c: modify_real_server(c, "Nope", "PSM1", {"weight": 1}), "virtual_service", "Nope"),
    (lambda c: remove_real_server(c, "Nope", "PSM1"), "virtual_service", "Nope"),
    (lambda c: modify_real_server(c, "CyberArk-PSM", "PSM9", {"weight": 1}), "label", "PSM9"),
    (lambda c: remove_real_server(c, "CyberArk-PSM", "PSM9"), "label", "PSM9"),
    # Labels are exact: case matters.
    (lambda c: remove_virtual_service(c, "cyberark-psm"), "label", "cyberark-psm"),
]  # fmt: skip


@pytest.mark.parametrize(("edit", "field", "label"), MISSING)
def test_missing(edit: Callable[[Config], Config], field: str, label: str) -> None:
    with pytest.raises(Missing) as caught:
        edit(base())
    assert caught.value.field == field
    assert repr(label) in str(caught.value)
    assert isinstance(caught.value, LookupError)


# --- invalid edits -------------------------------------------------------------------------

INVALID: list[tuple[Callable[[Config], Config], list[str]]] = [
    (
        lambda c: modify_real_server(c, "CyberArk-PSM", "PSM1", {"weight": 300}),
        ["virtual_services[CyberArk-PSM].real_servers[PSM1].weight"],
    ),
    (
        lambda c: modify_real_server(c, "CyberArk-PSM", "PSM1", {"colour": "red"}),
        ["virtual_services[CyberArk-PSM].real_servers[PSM1].colour"],
    ),
    (
        lambda c: modify_virtual_service(c, "CyberArk-PSM", {"health_check": {"path": "health"}}),
        ["virtual_services[CyberArk-PSM].health_check.path"],
    ),
    (
        lambda c: modify_virtual_service(c, "CyberArk-PSM", {"ports": "0", "ip": "x"}),
        ["virtual_services[CyberArk-PSM].ip", "virtual_services[CyberArk-PSM].ports"],
    ),
    (
        lambda c: add_virtual_service(c, {**WEB, "label": "CyberArk-PSM"}),
        ["virtual_services[CyberArk-PSM].label"],
    ),
    (
        lambda c: add_virtual_service(c, {**WEB, "ip": "192.168.94.100", "ports": "3000-4000"}),
        ["virtual_services[CyberArk-PSM-Web].ports"],
    ),
    (
        lambda c: add_virtual_service(c, {"label": "X"}),
        ["virtual_services[X].ip", "virtual_services[X].ports"],
    ),
    (
        lambda c: add_real_server(c, "CyberArk-PSM", {"label": "PSM1", "ip": "192.168.94.107"}),
        ["virtual_services[CyberArk-PSM].real_servers[PSM1].label"],
    ),
    (
        lambda c: add_real_server(
            c, "CyberArk-PSM", {"label": "PSM3", "ip": "192.168.94.105", "port": 3389}
        ),
        ["virtual_services[CyberArk-PSM].real_servers[PSM3].ip"],
    ),
    (
        lambda c: modify_real_server(c, "CyberArk-PSM", "PSM2", {"label": "PSM1"}),
        ["virtual_services[CyberArk-PSM].real_servers[PSM1].label"],
    ),
    (lambda c: add_virtual_service(c, ["not", "an", "object"]), [""]),
    (lambda c: add_real_server(c, "CyberArk-PSM", "PSM3"), [""]),
    (lambda c: modify_virtual_service(c, "CyberArk-PSM", None), [""]),
    (lambda c: modify_real_server(c, "CyberArk-PSM", "PSM1", 5), [""]),
]  # fmt: skip


@pytest.mark.parametrize(("edit", "expected"), INVALID)
def test_invalid_edits_name_the_field(
    edit: Callable[[Config], Config], expected: list[str]
) -> None:
    before = base()
    with pytest.raises(Invalid) as caught:
        edit(before)
    assert fields(caught.value) == expected
    assert before == base()


def test_not_an_object_says_what_was_expected() -> None:
    with pytest.raises(Invalid, match="a real server must be a JSON object"):
        add_real_server(base(), "CyberArk-PSM", "PSM3")
    with pytest.raises(Invalid, match="a virtual service must be a JSON object"):
        add_virtual_service(base(), [])


def test_switching_check_type_drops_the_old_type_s_request_settings() -> None:
    """A connect check has no path or expect; the operator need not clear them by hand."""
    after = modify_virtual_service(base(), "CyberArk-PSM", {"health_check": {"type": "connect"}})
    check = after.virtual_services[0].health_check
    assert check.type is CheckType.CONNECT
    assert (check.path, check.expect) == (None, None)
    assert check.port == 443  # the check port and timings are kept
    back = modify_virtual_service(
        after, "CyberArk-PSM", {"health_check": {"type": "https", "path": "/psm/api/health"}}
    )
    assert back.virtual_services[0].health_check.expect is None  # a new https check, not the old
    with pytest.raises(Invalid) as caught:
        modify_virtual_service(after, "CyberArk-PSM", {"health_check": {"type": "https"}})
    assert fields(caught.value) == ["virtual_services[CyberArk-PSM].health_check.path"]


def test_edits_do_not_touch_the_changes_given() -> None:
    changes: dict[str, Any] = {"health_check": {"interval": 10}}
    modify_virtual_service(base(), "CyberArk-PSM", changes)
    assert changes == {"health_check": {"interval": 10}}
    server: dict[str, Any] = {"label": "PSM3", "ip": "192.168.94.107"}
    add_real_server(base(), "CyberArk-PSM", server)
    assert server == {"label": "PSM3", "ip": "192.168.94.107"}


def test_an_edit_keeps_every_service_it_does_not_touch() -> None:
    """The same objects, so the store neither checks nor serialises them again."""
    before = add_virtual_service(
        add_virtual_service(base(), WEB), {**WEB, "label": "C", "ports": 80}
    )
    edits: list[Callable[[Config], Config]] = [
        lambda c: modify_real_server(c, "CyberArk-PSM-Web", "PSM1", {"weight": 5}),
        lambda c: modify_virtual_service(c, "CyberArk-PSM-Web", {"retries": 5}),
        lambda c: remove_real_server(c, "CyberArk-PSM-Web", "PSM1"),
        lambda c: remove_virtual_service(c, "CyberArk-PSM-Web"),
    ]
    before = add_real_server(before, "CyberArk-PSM-Web", {"label": "PSM1", "ip": "10.0.0.1"})
    first, _, last = before.virtual_services
    for edit in edits:
        after = edit(before)
        assert after.virtual_services[0] is first
        assert after.virtual_services[-1] is last
        assert after.virtual_services[1:-1] != before.virtual_services[1:2]
    added = add_virtual_service(before, {**WEB, "label": "D", "ports": 8080})
    assert added.virtual_services[:3] == before.virtual_services
    assert all(
        a is b for a, b in zip(added.virtual_services[:3], before.virtual_services, strict=True)
    )


def test_an_edit_that_clashes_with_another_service_names_it() -> None:
    before = add_virtual_service(base(), WEB)
    with pytest.raises(Invalid) as caught:
        modify_virtual_service(before, "CyberArk-PSM-Web", {"ip": "192.168.94.100", "ports": 3389})
    assert [str(p) for p in caught.value.problems] == [
        "virtual_services[CyberArk-PSM-Web].ports: 192.168.94.100:3389 is already used by "
        "'CyberArk-PSM'"
    ]
    with pytest.raises(Invalid) as caught:
        modify_virtual_service(before, "CyberArk-PSM-Web", {"label": "CyberArk-PSM"})
    assert fields(caught.value) == ["virtual_services[CyberArk-PSM].label"]
