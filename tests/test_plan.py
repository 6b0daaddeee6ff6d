"""The plan: what a commit changes, item by item, and whether it can be done at runtime."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from balancer.engines.builtin import message
from balancer.model import Config, VirtualService
from balancer.plan import Change, Plan, ServiceChange, changes, make

PSM = "virtual_services[CyberArk-PSM]"
WEB = "virtual_services[CyberArk-PSM-Web]"


def document() -> dict[str, Any]:
    check = {"type": "https", "path": "/psm/api/health", "expect": "PASS", "port": 443}
    servers = [{"label": "PSM1", "ip": "192.168.94.105"}, {"label": "PSM2", "ip": "192.168.94.106"}]
    return {
        "virtual_services": [
            {
                "label": "CyberArk-PSM",
                "ip": "192.168.94.100",
                "ports": "3389",
                "health_check": dict(check),
                "real_servers": [{**s, "port": 3389} for s in servers],
            },
            {
                "label": "CyberArk-PSM-Web",
                "ip": "192.168.94.101",
                "ports": "443",
                "health_check": dict(check),
                "real_servers": [{**s, "port": 443} for s in servers],
            },
        ]
    }


def config(document: dict[str, Any]) -> Config:
    return Config.model_validate(document)


def edited(path: list[Any], value: Any) -> Config:
    """The document with one setting set: path like [0, "real_servers", 1, "weight"]."""
    changed = document()
    node: Any = changed["virtual_services"]
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    return config(changed)


def test_everything_is_added_to_nothing() -> None:
    found = changes(None, config(document()))
    assert [(c.path, c.before, c.runtime) for c in found] == [
        (PSM, None, False),
        (WEB, None, False),
    ]
    assert found[0].after["real_servers"][0]["label"] == "PSM1"
    assert not make(None, config(document()), 1, None).runtime


def test_nothing_to_nothing() -> None:
    assert changes(None, Config()) == []
    assert changes(Config(), Config()) == []
    assert make(Config(), Config(), 2, 1).runtime


def test_no_change() -> None:
    assert changes(config(document()), config(document())) == []


@pytest.mark.parametrize(
    ("path", "value", "field", "before", "after"),
    [
        ([0, "real_servers", 0, "weight"], 50, "real_servers[PSM1].weight", 100, 50),
        ([0, "real_servers", 1, "weight"], 0, "real_servers[PSM2].weight", 100, 0),
        ([0, "real_servers", 0, "state"], "drain", "real_servers[PSM1].state", "online", "drain"),
        ([0, "real_servers", 0, "state"], "halt", "real_servers[PSM1].state", "online", "halt"),
        (
            [0, "real_servers", 0, "max_connections"],
            10,
            "real_servers[PSM1].max_connections",
            0,
            10,
        ),
    ],
)
def test_runtime_changes(path: list[Any], value: Any, field: str, before: Any, after: Any) -> None:
    found = changes(config(document()), edited(path, value))
    assert found == [Change(f"{PSM}.{field}", before, after, runtime=True)]
    assert make(config(document()), edited(path, value), 2, 1).runtime


@pytest.mark.parametrize(
    ("path", "value", "field", "before", "after"),
    [
        ([0, "ports"], "3389,3390", "ports", "3389", "3389,3390"),
        ([0, "ip"], "192.168.94.99", "ip", "192.168.94.100", "192.168.94.99"),
        ([0, "balancing"], "least_connections", "balancing", "round_robin", "least_connections"),
        ([0, "health_check", "interval"], 10, "health_check.interval", 4.0, 10.0),
        ([0, "health_check", "expect"], "OK", "health_check.expect", "PASS", "OK"),
        ([0, "persistence"], {"mode": "none"}, "persistence.mode", "source_ip", "none"),
        ([0, "client_timeout"], 60, "client_timeout", 43200.0, 60.0),
        ([0, "retries"], 1, "retries", 3, 1),
        ([0, "real_servers", 0, "ip"], "192.168.94.9", "real_servers[PSM1].ip", "192.168.94.105",
         "192.168.94.9"),
        ([0, "real_servers", 0, "port"], 3390, "real_servers[PSM1].port", 3389, 3390),
    ],
)  # fmt: skip
def test_reload_changes(path: list[Any], value: Any, field: str, before: Any, after: Any) -> None:
    found = changes(config(document()), edited(path, value))
    assert found == [Change(f"{PSM}.{field}", before, after, runtime=False)]
    assert not make(config(document()), edited(path, value), 2, 1).runtime


def test_a_weight_elsewhere_is_not_a_runtime_field() -> None:
    """Only a real server's weight, state and max_connections change at runtime."""
    found = changes(config(document()), edited([0, "health_check", "port"], 8443))
    assert [(c.path, c.runtime) for c in found] == [(f"{PSM}.health_check.port", False)]


def test_added_and_removed_real_servers() -> None:
    after = document()
    servers = after["virtual_services"][0]["real_servers"]
    del servers[0]
    servers.append({"label": "PSM3", "ip": "192.168.94.107", "port": 3389})
    found = changes(config(document()), config(after))
    assert [(c.path, c.before is None, c.after is None, c.runtime) for c in found] == [
        (f"{PSM}.real_servers[PSM1]", False, True, False),
        (f"{PSM}.real_servers[PSM3]", True, False, False),
    ]
    assert not make(config(document()), config(after), 2, 1).runtime


def test_added_and_removed_virtual_services() -> None:
    after = document()
    after["virtual_services"][1]["label"] = "Renamed"  # a new label is a new service
    found = changes(config(document()), config(after))
    assert [(c.path, c.before is None) for c in found] == [
        (WEB, False),
        ("virtual_services[Renamed]", True),
    ]
    emptied = changes(config(document()), Config())
    assert [(c.path, c.after, c.runtime) for c in emptied] == [
        (PSM, None, False),
        (WEB, None, False),
    ]
    assert emptied[0].before["label"] == "CyberArk-PSM"


def test_labels_identify_items_so_reordering_is_no_change() -> None:
    after = document()
    after["virtual_services"].reverse()
    for vs in after["virtual_services"]:
        vs["real_servers"].reverse()
    assert changes(config(document()), config(after)) == []


def test_several_changes_at_once() -> None:
    after = document()
    psm, web = after["virtual_services"]
    psm["real_servers"][0]["weight"] = 10
    psm["real_servers"][1]["state"] = "drain"
    web["ports"] = "443,8443"
    found = changes(config(document()), config(after))
    assert [(c.path, c.runtime) for c in found] == [
        (f"{PSM}.real_servers[PSM1].weight", True),
        (f"{PSM}.real_servers[PSM2].state", True),
        (f"{WEB}.ports", False),
    ]
    plan = make(config(document()), config(after), 2, 1)
    assert [(c.label, c.runtime) for c in plan.changed] == [
        ("CyberArk-PSM", True),
        ("CyberArk-PSM-Web", False),
    ]
    assert not plan.runtime


def test_adding_a_fallback_is_one_change() -> None:
    [change] = changes(
        config(document()), edited([0, "fallback"], {"ip": "192.168.94.200", "port": 3389})
    )
    assert change.path == f"{PSM}.fallback"
    assert change.after == {"ip": "192.168.94.200", "port": 3389}
    assert not change.runtime


def test_changes_do_not_touch_their_inputs() -> None:
    running, desired = config(document()), edited([0, "real_servers", 0, "weight"], 1)
    snapshot = copy.deepcopy((running.model_dump(), desired.model_dump()))
    changes(running, desired)
    assert (running.model_dump(), desired.model_dump()) == snapshot


# --- the plan an engine applies -------------------------------------------------------------


def one(plan: Plan) -> ServiceChange:
    assert not plan.added
    assert not plan.removed
    assert len(plan.changed) == 1
    return plan.changed[0]


def test_a_plan_skips_services_it_is_given_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """An edit keeps the services it does not touch: those are not compared at all."""
    running = config(document())
    psm, web = running.virtual_services
    first = psm.real_servers[0].model_copy(update={"weight": 5})
    weighted = psm.model_copy(update={"real_servers": (first, *psm.real_servers[1:])})
    compared = []
    equal = VirtualService.__eq__

    def counted(self: VirtualService, other: object) -> bool:
        compared.append(self.label)
        return equal(self, other)

    monkeypatch.setattr(VirtualService, "__eq__", counted)
    plan = make(running, Config(virtual_services=(weighted, web)), 2, 1)
    assert compared == ["CyberArk-PSM"]
    change = one(plan)
    assert (change.label, change.changed, change.fields) == ("CyberArk-PSM", ("PSM1",), set())
    assert plan.runtime
    assert change.rechecked == set()
    assert plan.keeps_health("CyberArk-PSM", "PSM1")
    assert plan.keeps_health("CyberArk-PSM-Web", "PSM2")
    assert make(running, running, 2, 1).changed == ()


def test_a_plan_from_nothing_adds_everything_and_reloads() -> None:
    plan = make(None, config(document()), 1, None)
    assert [vs.label for vs in plan.added] == ["CyberArk-PSM", "CyberArk-PSM-Web"]
    assert not plan.runtime
    assert not plan.keeps_health("CyberArk-PSM", "PSM1")


def test_each_real_server_of_a_changed_service() -> None:
    after = document()
    servers = after["virtual_services"][0]["real_servers"]
    servers[0]["ip"] = "192.168.94.9"  # PSM1 moves
    servers[1]["state"] = "drain"
    servers.append({"label": "PSM3", "ip": "192.168.94.107", "port": 3389})
    change = one(make(config(document()), config(after), 2, 1))
    assert (change.added, change.removed, change.changed) == (("PSM3",), (), ("PSM1", "PSM2"))
    assert change.readdressed == {"PSM1"}
    assert change.rechecked == {"PSM1", "PSM3"}, "a drained server keeps its health"
    assert not change.runtime
    assert [(old.label, new.state) for old, new in change.servers_changed()] == [
        ("PSM1", "online"),
        ("PSM2", "drain"),
    ]


@pytest.mark.parametrize(
    ("path", "value", "rechecked"),
    [
        ([0, "health_check", "interval"], 10, {"PSM1", "PSM2"}),
        ([0, "ports"], "3389,3390", set()),  # the first port, checked, stays
        ([0, "ports"], "3388,3389", {"PSM1", "PSM2"}),
        ([0, "client_timeout"], 60, set()),
    ],
)
def test_what_must_be_checked_afresh(path: list[Any], value: Any, rechecked: set[str]) -> None:
    change = one(make(config(document()), edited(path, value), 2, 1))
    assert change.fields == {path[1]}
    assert change.rechecked == rechecked
    assert not change.runtime


def test_the_check_port_defaults_to_the_service_port() -> None:
    """A server without a port is checked on the service's first port; a check port wins."""
    vs = config(document()).virtual_services[0]
    bare = vs.real_servers[0].model_copy(update={"port": None})
    own = vs.real_servers[0].model_copy(update={"port": 3390})
    multi = vs.model_copy(update={"ports": ((3389, 3391),)})
    assert multi.first_port == multi.service_port(bare) == 3389
    assert multi.service_port(own) == 3390
    assert vs.check_port(bare) == 443
    unchecked = vs.model_copy(
        update={"health_check": vs.health_check.model_copy(update={"port": None})}
    )
    assert (unchecked.check_port(bare), unchecked.check_port(own)) == (3389, 3390)


def test_the_built_in_engine_is_sent_what_changes() -> None:
    """A weight travels as its one service, and is the same plan again in the engine."""
    running = config(document())
    desired = edited([0, "real_servers", 0, "weight"], 50)
    plan = make(running, desired, 2, 1)
    sent = message.changes(plan)
    assert [c["service"]["label"] for c in sent["changed"]] == ["CyberArk-PSM"]
    assert (sent["added"], sent["removed"], "config" in sent) == ([], [], False)
    services = {vs.label: vs for vs in running.virtual_services}
    again = message.received(json.loads(json.dumps(sent)), services, 1)
    assert again.changed == plan.changed
    assert again.config.virtual_services[1] is running.virtual_services[1], "kept, not parsed"
    with pytest.raises(message.Stale):
        message.received(sent, services, 5)
    whole = message.changes(make(None, desired, 2, None))
    assert whole["config"]["virtual_services"][0]["label"] == "CyberArk-PSM"
