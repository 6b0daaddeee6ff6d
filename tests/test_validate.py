"""validate: field paths by label, every problem at once, and the checks that span objects."""

from __future__ import annotations

from typing import Any

import pytest

from balancer.model import Config, RealServer
from balancer.validate import Invalid, Problem, check, checked, parse, parse_as


def service(label: Any, ip: str = "192.168.94.100", ports: Any = "3389", **settings: Any) -> Any:
    return {"label": label, "ip": ip, "ports": ports, **settings}


def server(label: Any, ip: str = "192.168.94.105", **settings: Any) -> Any:
    return {"label": label, "ip": ip, **settings}


def problems(*services: Any) -> list[tuple[str, str]]:
    """The (field, reason) pairs parse() raises for these virtual services; [] if it accepts."""
    try:
        parse({"virtual_services": list(services)})
    except Invalid as error:
        return [(p.field, p.reason) for p in error.problems]
    return []


def fields(*services: Any) -> list[str]:
    return [field for field, _ in problems(*services)]


# --- field paths ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "field"),
    [
        (
            service("CyberArk-PSM", real_servers=[server("PSM1", weight=300)]),
            "virtual_services[CyberArk-PSM].real_servers[PSM1].weight",
        ),
        (
            service("CyberArk-PSM", real_servers=[server("PSM1"), server("PSM2", ip="x")]),
            "virtual_services[CyberArk-PSM].real_servers[PSM2].ip",
        ),
        (
            service("CyberArk-PSM", health_check={"type": "https", "path": "/", "rise": 0}),
            "virtual_services[CyberArk-PSM].health_check.rise",
        ),
        # A rule of the whole health check names the field it is about.
        (
            service("CyberArk-PSM", health_check={"type": "https"}),
            "virtual_services[CyberArk-PSM].health_check.path",
        ),
        (
            service("CyberArk-PSM", health_check={"type": "connect", "expect": "PASS"}),
            "virtual_services[CyberArk-PSM].health_check.expect",
        ),
        (
            service("CyberArk-PSM", health_check={"type": "external"}),
            "virtual_services[CyberArk-PSM].health_check.script",
        ),
        (
            service("CyberArk-PSM", persistence={"mode": "cookie"}),
            "virtual_services[CyberArk-PSM].persistence.mode",
        ),
        (
            service("CyberArk-PSM", fallback={"ip": "10.0.0.1", "port": 0}),
            "virtual_services[CyberArk-PSM].fallback.port",
        ),
        (service("CyberArk-PSM", ports="10-5"), "virtual_services[CyberArk-PSM].ports"),
        (service("CyberArk-PSM", colour="red"), "virtual_services[CyberArk-PSM].colour"),
        # No label, or a label that is not a string: the list index.
        ({"ip": "192.168.94.100", "ports": "3389"}, "virtual_services[0].label"),
        (
            service("CyberArk-PSM", real_servers=[{"ip": "10.0.0.1"}]),
            "virtual_services[CyberArk-PSM].real_servers[0].label",
        ),
    ],
)
def test_field_paths_name_objects_by_label(document: Any, field: str) -> None:
    assert fields(document) == [field]


def test_a_label_that_is_not_a_string_falls_back_to_the_index() -> None:
    assert fields(service(7, real_servers=[server(8, state="off")])) == [
        "virtual_services[0].label",
        "virtual_services[0].real_servers[0].label",
        "virtual_services[0].real_servers[0].state",
    ]


def test_an_unlabelled_service_still_names_its_labelled_servers() -> None:
    assert fields(service(None, real_servers=[server("PSM1", state="off")])) == [
        "virtual_services[0].label",
        "virtual_services[0].real_servers[PSM1].state",
    ]


def test_index_counts_from_the_document_not_from_labelled_items() -> None:
    documents = [service("A"), service("B", ip="10.0.0.2"), {"ip": "10.0.0.3", "ports": "1"}]
    assert fields(*documents) == ["virtual_services[2].label"]


def test_unknown_fields_are_named_and_explained() -> None:
    with pytest.raises(Invalid) as caught:
        parse({"virtual_services": [service("A", persistence={"mode": "none", "x": 1})], "y": 2})
    assert set(caught.value.problems) == {
        Problem("virtual_services[A].persistence.x", "is not a known setting"),
        Problem("y", "is not a known setting"),
    }


def test_reasons_carry_no_pydantic_prefix() -> None:
    found = problems(service("A", ip="nowhere", health_check={"type": "http"}))
    assert found == [
        ("virtual_services[A].ip", "'nowhere' is not an IPv4 or IPv6 address"),
        ("virtual_services[A].health_check.path", "a negotiate HTTP check needs a path"),
    ]


LABEL_RULE = (
    "use letters, digits, dots, dashes and underscores, up to 64 characters, "
    "starting with a letter or digit"
)


@pytest.mark.parametrize(
    ("settings", "field", "reason"),
    [
        ({"label": "PSM 2"}, "label", LABEL_RULE),
        ({"label": ""}, "label", "is required"),
        ({"label": 7}, "label", "must be text, not 7"),
        ({"ip": None}, "ip", "None is not an IPv4 or IPv6 address"),
        ({"port": "99999"}, "port", "must be at most 65535, not 99999"),
        ({"port": 0}, "port", "must be at least 1, not 0"),
        ({"port": "443x"}, "port", "'443x' is not a whole number"),
        ({"port": 44.5}, "port", "44.5 is not a whole number"),
        ({"weight": ""}, "weight", "is required"),
        ({"state": "up"}, "state", "must be 'online', 'drain' or 'halt', not 'up'"),
        ({"colour": "red"}, "colour", "is not a known setting"),
    ],
)
def test_a_real_servers_problems_in_the_operators_words(
    settings: dict[str, Any], field: str, reason: str
) -> None:
    found = problems(service("A", real_servers=[{**server("PSM1"), **settings}]))
    name = settings.get("label", "PSM1")
    where = f"virtual_services[A].real_servers[{name if isinstance(name, str) and name else 0}]"
    assert found == [(f"{where}.{field}", reason)]


@pytest.mark.parametrize(
    ("settings", "field", "reason"),
    [
        ({"label": None}, "label", "is required"),
        ({"protocol": "udp"}, "protocol", "must be 'tcp', not 'udp'"),
        ({"persistence": {"timeout": "long"}}, "persistence.timeout", "'long' is not a number"),
        ({"client_timeout": 1e9}, "client_timeout", "must be at most 604800, not 1000000000"),
        (
            {"health_check": {"also_check_service_port": "maybe"}},
            "health_check.also_check_service_port",
            "must be true or false, not 'maybe'",
        ),
        (
            {"fallback": "10.0.0.9"},
            "fallback",
            "must be an object of settings ({...}), not '10.0.0.9'",
        ),
        ({"real_servers": "PSM1"}, "real_servers", "must be a list ([...]), not 'PSM1'"),
    ],
)
def test_a_virtual_services_problems_in_the_operators_words(
    settings: dict[str, Any], field: str, reason: str
) -> None:
    document = {**service("A"), **settings}
    if settings.get("label", "A") is None:
        del document["label"]
    found = problems(document)
    where = "virtual_services[A]" if "label" in document else "virtual_services[0]"
    assert found == [(f"{where}.{field}", reason)]


def test_no_reason_is_pydantics_own() -> None:
    """Every kind of problem a document can have is said in the operator's words."""
    document = {
        "label": "a b",
        "ip": "10.0.0.1",
        "ports": "1",
        "protocol": 6,
        "balancing": "fastest",
        "retries": "3.5",
        "connect_timeout": float("nan"),
        "persistence": {"mode": "cookie", "table_size": True, "x": 1},
        "health_check": {"rise": 0, "fall": 1000, "interval": "", "path": 5},
        "real_servers": [{"ip": "10.0.0.2", "weight": 2.5}, 3],
    }
    found = problems(document)
    assert len(found) >= 12
    for field, reason in found:
        assert not any(word in reason for word in ("Input should", "String should", "Field ")), (
            field,
            reason,
        )


@pytest.mark.parametrize("document", [[], "config", None, 5])
def test_a_document_that_is_not_an_object(document: Any) -> None:
    with pytest.raises(Invalid) as caught:
        parse(document)
    [problem] = caught.value.problems
    assert problem.field == ""
    assert str(problem) == problem.reason


def test_parse_as_prefixes_the_paths() -> None:
    with pytest.raises(Invalid) as caught:
        parse_as(RealServer, server("PSM1", weight=-1), prefix="real_servers[PSM1]")
    assert [p.field for p in caught.value.problems] == ["real_servers[PSM1].weight"]


# --- every problem at once -----------------------------------------------------------------


def test_every_problem_is_reported_not_just_the_first() -> None:
    documents = [
        service(
            "CyberArk-PSM",
            ip="192.168.94.999",
            ports="0",
            real_servers=[server("PSM1", weight=300), server("PSM 2"), {"ip": "10.0.0.1"}],
        ),
        service("bad label", ports="3389", retries=0),
    ]
    assert fields(*documents) == [
        "virtual_services[CyberArk-PSM].ip",
        "virtual_services[CyberArk-PSM].ports",
        "virtual_services[CyberArk-PSM].real_servers[PSM1].weight",
        "virtual_services[CyberArk-PSM].real_servers[PSM 2].label",
        "virtual_services[CyberArk-PSM].real_servers[2].label",
        "virtual_services[bad label].label",
        "virtual_services[bad label].retries",
    ]


def test_every_cross_object_problem_is_reported() -> None:
    documents = [
        service("A", real_servers=[server("PSM1"), server("PSM1", ip="10.0.0.9")]),
        service("A", ip="10.0.0.1"),
        service("B", real_servers=[server("X", port=3389), server("Y", port=3389)]),
    ]
    assert fields(*documents) == [
        "virtual_services[A].label",
        "virtual_services[A].real_servers[PSM1].label",
        "virtual_services[B].ports",
        "virtual_services[B].real_servers[Y].ip",
    ]


def test_invalid_carries_all_problems_and_a_readable_message() -> None:
    error = Invalid([Problem("a.b", "is wrong"), Problem("", "the whole thing is wrong")])
    assert isinstance(error, ValueError)
    assert error.problems == (Problem("a.b", "is wrong"), Problem("", "the whole thing is wrong"))
    assert str(error) == "a.b: is wrong; the whole thing is wrong"


def test_invalid_message_from_parse_lists_each_field() -> None:
    with pytest.raises(Invalid) as caught:
        parse({"virtual_services": [service("A", ports="x", real_servers=[server("P", ip="y")])]})
    assert str(caught.value) == (
        "virtual_services[A].ports: 'x' is not a port or a range like 8000-8010; "
        "virtual_services[A].real_servers[P].ip: 'y' is not an IPv4 or IPv6 address"
    )


# --- checks across objects -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("documents", "expected"),
    [
        (
            [service("PSM"), service("PSM", ip="10.0.0.1")],
            [("virtual_services[PSM].label", "'PSM' is used twice")],
        ),
        (
            [service("PSM", real_servers=[server("PSM1"), server("PSM1", ip="10.0.0.9")])],
            [("virtual_services[PSM].real_servers[PSM1].label", "'PSM1' is used twice")],
        ),
        (
            [service("PSM", real_servers=[server("PSM1"), server("PSM2")])],
            [
                (
                    "virtual_services[PSM].real_servers[PSM2].ip",
                    "192.168.94.105 is already real server 'PSM1' of this service",
                )
            ],
        ),
        (
            [service("PSM", real_servers=[server("A", port=3389), server("B", port=3389)])],
            [
                (
                    "virtual_services[PSM].real_servers[B].ip",
                    "192.168.94.105:3389 is already real server 'A' of this service",
                )
            ],
        ),
        (
            [service("A"), service("B")],
            [("virtual_services[B].ports", "192.168.94.100:3389 is already used by 'A'")],
        ),
        (
            [service("A", ports="3000-3400"), service("B", ports="443,3389")],
            [("virtual_services[B].ports", "192.168.94.100:3389 is already used by 'A'")],
        ),
        (
            [service("A", ports="8000-8010"), service("B", ports="8010-8020")],
            [("virtual_services[B].ports", "192.168.94.100:8010 is already used by 'A'")],
        ),
        (
            [service("A", ip="2001:db8::1"), service("B", ip="2001:DB8:0::1")],
            [("virtual_services[B].ports", "2001:db8::1:3389 is already used by 'A'")],
        ),
    ],
)
def test_cross_object_problems(documents: list[Any], expected: list[tuple[str, str]]) -> None:
    assert problems(*documents) == expected


@pytest.mark.parametrize(
    "documents",
    [
        [service("A", ports="3389"), service("B", ip="192.168.94.101", ports="3389")],
        [service("A", ip="192.168.94.100"), service("B", ip="2001:db8::100")],
        [service("A", ports="3389"), service("B", ports="443")],
        [service("A", ports="8000-8009"), service("B", ports="8010-8020")],
        # The same real server in two services, and on two ports in one service.
        [
            service("A", real_servers=[server("PSM1", port=3389), server("PSM1-web", port=443)]),
            service("B", ports="443", real_servers=[server("PSM1")]),
        ],
        # Labels are per service: PSM1 in both VIPs is the guide's own example.
        [
            service("CyberArk-PSM", real_servers=[server("PSM1")]),
            service("CyberArk-PSM-Web", ip="192.168.94.101", real_servers=[server("PSM1")]),
        ],
    ],
)
def test_allowed_combinations(documents: list[Any]) -> None:
    assert problems(*documents) == []


def test_check_and_checked_on_a_built_config() -> None:
    config = Config.model_validate({"virtual_services": [service("A"), service("A", ip="::1")]})
    assert check(config) == [Problem("virtual_services[A].label", "'A' is used twice")]
    with pytest.raises(Invalid):
        checked(config)
    good = Config.model_validate({"virtual_services": [service("A")]})
    assert checked(good) is good
    assert check(Config()) == []


def test_parse_returns_the_config() -> None:
    config = parse({"virtual_services": [service("A", real_servers=[server("PSM1")])]})
    assert isinstance(config, Config)
    assert config.virtual_services[0].real_servers[0].label == "PSM1"
    assert parse({}) == Config()


def test_services_already_checked_are_not_checked_on_their_own_again() -> None:
    """``known``: an edit's other services, the same objects as in the revision they came from.
    What spans services is still checked."""
    twice = [server("PSM1"), server("PSM1", ip="192.168.94.106")]
    # Built without the checks, as only a bug could: a service checked once cannot be so.
    bad = Config.model_validate({"virtual_services": [service("A", real_servers=twice)]})
    assert check(bad) == [
        Problem("virtual_services[A].real_servers[PSM1].label", "'PSM1' is used twice")
    ]
    assert check(bad, known=bad) == []
    other = Config.model_validate({"virtual_services": [service("A", ip="192.168.94.101")]})
    both = Config(virtual_services=(*bad.virtual_services, *other.virtual_services))
    assert check(both, known=bad) == [Problem("virtual_services[A].label", "'A' is used twice")]
    # An equal service that is not the same object is checked.
    again = Config.model_validate(bad.model_dump())
    assert check(again, known=bad) == check(bad)


def test_a_wildcard_service_clashes_with_any_address_of_its_family() -> None:
    assert problems(service("A"), service("B", ip="0.0.0.0")) == [
        ("virtual_services[B].ports", "0.0.0.0:3389 is already used by 'A'")
    ]
    assert problems(service("A", ip="0.0.0.0"), service("B")) == [
        ("virtual_services[B].ports", "192.168.94.100:3389 is already used by 'A'")
    ]
    assert problems(service("A", ip="::"), service("B")) == []
    assert problems(service("A", ip="2001:db8::1"), service("B", ip="::", ports="443,3389")) == [
        ("virtual_services[B].ports", ":::3389 is already used by 'A'")
    ]
