"""Directory sign-in against a real slapd and a real freeradius on loopback: who signs in with
which role, and what `test` says failed when one does not."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from balancer import directory
from balancer.directory import Refused, Settings, authenticate
from balancer.directory.settings import Name, in_chain_filter, role_of, user_filter
from balancer.roles import Role
from balancer.validate import Invalid, parse_as
from tests.appliance import free_port
from tests.directory_servers import (
    BASE_DN,
    RADIUS_SECRET,
    READER_DN,
    READER_PASSWORD,
    USERS,
    Radius,
    Slapd,
    authority,
    freeradius,
    slapd,
)

GROUPS = f"ou=groups,{BASE_DN}"
ROLES = (
    {"group": f"cn=balancer-admins,{GROUPS}", "role": "administrator"},
    {"group": "balancer-operators", "role": "operator"},  # by its name alone
)


@pytest.fixture(scope="module")
def ldap_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    with slapd(tmp_path_factory.mktemp("directory") / "slapd") as server:
        yield server


@pytest.fixture(scope="module")
def radius_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Radius]:
    with freeradius(tmp_path_factory.mktemp("directory") / "radius") as server:
        yield server


def ldap_settings(server: Slapd, kind: str = "ldap", **changes: Any) -> Settings:
    port = server.ldaps_port if kind == "ldaps" else server.ldap_port
    return Settings.model_validate(
        {
            "kind": kind,
            "servers": [f"127.0.0.1:{port}"],
            "base_dn": BASE_DN,
            "bind_dn": READER_DN,
            "domain": "example.test",
            "ca_certificate": server.ca.pem if kind != "ldap" else "",
            "roles": ROLES,
            "timeout": 3,
            **changes,
        }
    )


def radius_settings(server: Radius, **changes: Any) -> Settings:
    return Settings.model_validate(
        {
            "kind": "radius",
            "servers": [f"127.0.0.1:{server.port}"],
            "roles": [
                {"group": "balancer-admins", "role": "administrator"},
                {"group": "operators", "role": "operator"},
            ],
            "role_attribute": "Filter-Id",
            "timeout": 2,
            **changes,
        }
    )


def password(name: str) -> str:
    return USERS[name][0]


@pytest.mark.parametrize("kind", ["ldap", "starttls", "ldaps"])
def test_a_user_signs_in_with_the_role_of_their_group(ldap_server: Slapd, kind: str) -> None:
    accepted = authenticate(
        ldap_settings(ldap_server, kind), READER_PASSWORD, "alice", password("alice")
    )
    assert (accepted.name, accepted.role) == ("alice", Role.ADMINISTRATOR)
    assert accepted.groups == (f"cn=balancer-admins,{GROUPS}",)


def test_nested_group_membership_gives_its_role(ldap_server: Slapd) -> None:
    accepted = authenticate(ldap_settings(ldap_server), READER_PASSWORD, "bob", password("bob"))
    assert accepted.role == Role.OPERATOR
    assert set(accepted.groups) == {f"cn=helpdesk,{GROUPS}", f"cn=balancer-operators,{GROUPS}"}
    # Without the walk, bob is in helpdesk only, which no mapping names.
    direct = ldap_settings(ldap_server, nested_groups="none")
    with pytest.raises(Refused) as refused:
        authenticate(direct, READER_PASSWORD, "bob", password("bob"))
    assert refused.value.reason == "group"


@pytest.mark.parametrize("typed", ["alice@example.test", "EXAMPLE\\alice", "ALICE"])
def test_upn_and_domain_forms_name_the_same_account(ldap_server: Slapd, typed: str) -> None:
    accepted = authenticate(ldap_settings(ldap_server), READER_PASSWORD, typed, password("alice"))
    assert (accepted.name, accepted.role) == ("alice", Role.ADMINISTRATOR)


def test_each_failure_is_named(ldap_server: Slapd) -> None:
    settings = ldap_settings(ldap_server)
    cases = {
        "password": (READER_PASSWORD, "alice", "not alice's password"),
        "group": (READER_PASSWORD, "carol", password("carol")),
        "not_found": (READER_PASSWORD, "mallory", "anything"),
        "bind": ("not the reader's password", "alice", password("alice")),
    }
    for reason, (secret, name, typed) in cases.items():
        with pytest.raises(Refused) as refused:
            directory.test(settings, secret, name, typed)
        assert refused.value.reason == reason, str(refused.value)
    with pytest.raises(Refused) as refused:
        directory.test(settings, READER_PASSWORD, "carol", password("carol"))
    assert f"cn=accounting,{GROUPS}" in str(refused.value)
    # An empty password would be an unauthenticated bind, which a directory takes.
    with pytest.raises(Refused) as refused:
        authenticate(settings, READER_PASSWORD, "alice", "")
    assert refused.value.reason == "password"


def test_a_name_cannot_widen_the_search(ldap_server: Slapd) -> None:
    with pytest.raises(Refused) as refused:
        authenticate(ldap_settings(ldap_server), READER_PASSWORD, "*", password("alice"))
    assert refused.value.reason == "not_found"
    assert user_filter(ldap_settings(ldap_server), Name.of("a*)(uid=*", "")) == (
        "(|(sAMAccountName=a\\2a\\29\\28uid=\\2a)(userPrincipalName=a\\2a\\29\\28uid=\\2a)"
        "(uid=a\\2a\\29\\28uid=\\2a))"
    )


def test_test_without_a_user_reaches_and_binds(ldap_server: Slapd) -> None:
    said = directory.test(ldap_settings(ldap_server, "ldaps"), READER_PASSWORD, "", "")
    assert said == f"127.0.0.1:{ldap_server.ldaps_port} answered and took {READER_DN}"


@pytest.mark.parametrize("kind", ["ldaps", "starttls"])
def test_an_untrusted_certificate_is_refused_and_said_so(ldap_server: Slapd, kind: str) -> None:
    stranger = authority("Not the directory's CA")
    settings = ldap_settings(ldap_server, kind, ca_certificate=stranger.pem)
    with pytest.raises(Refused) as refused:
        directory.test(settings, READER_PASSWORD, "alice", password("alice"))
    assert refused.value.reason == "certificate"
    assert "certificate is not trusted" in str(refused.value)


def test_a_server_down_is_unreachable_and_the_next_one_is_asked(ldap_server: Slapd) -> None:
    down = f"127.0.0.1:{free_port(['127.0.0.1'])}"
    with pytest.raises(Refused) as refused:
        directory.test(
            ldap_settings(ldap_server, servers=[down]), READER_PASSWORD, "alice", password("alice")
        )
    assert refused.value.reason == "unreachable"
    assert down in str(refused.value)
    both = ldap_settings(ldap_server, servers=[down, f"127.0.0.1:{ldap_server.ldap_port}"])
    assert (
        authenticate(both, READER_PASSWORD, "alice", password("alice")).role == Role.ADMINISTRATOR
    )


def test_radius_signs_in_with_the_role_of_a_reply_attribute(radius_server: Radius) -> None:
    settings = radius_settings(radius_server)
    accepted = authenticate(settings, RADIUS_SECRET, "alice", password("alice"))
    assert (accepted.name, accepted.role, accepted.groups) == (
        "alice",
        Role.ADMINISTRATOR,
        ("balancer-admins",),
    )
    by_class = radius_settings(radius_server, role_attribute="Class")
    assert authenticate(by_class, RADIUS_SECRET, "bob", password("bob")).role == Role.OPERATOR
    # carol's Access-Accept has neither: refused, unless the administrator set a default role.
    with pytest.raises(Refused) as refused:
        authenticate(settings, RADIUS_SECRET, "carol", password("carol"))
    assert refused.value.reason == "group"
    viewers = radius_settings(radius_server, default_role="viewer")
    assert authenticate(viewers, RADIUS_SECRET, "carol", password("carol")).role == Role.VIEWER


def test_radius_failures_are_named(radius_server: Radius) -> None:
    settings = radius_settings(radius_server)
    with pytest.raises(Refused) as refused:
        directory.test(settings, RADIUS_SECRET, "alice", "not alice's password")
    assert refused.value.reason == "password"
    # A wrong shared secret: the server drops the request (its Message-Authenticator is wrong).
    with pytest.raises(Refused) as refused:
        directory.test(
            radius_settings(radius_server, timeout=0.5),
            "not the secret",
            "alice",
            password("alice"),
        )
    assert refused.value.reason == "unreachable"
    with pytest.raises(Refused) as refused:
        directory.test(settings, RADIUS_SECRET, "", "")
    assert "user name and password" in str(refused.value)


def test_settings_are_checked_field_by_field() -> None:
    with pytest.raises(Invalid) as invalid:
        parse_as(
            Settings, {"kind": "ldaps", "servers": ["ldap.example.com"], "base_dn": "nonsense"}
        )
    assert [p.field for p in invalid.value.problems] == ["base_dn"]
    with pytest.raises(Invalid) as invalid:
        parse_as(Settings, {"kind": "radius", "servers": ["radius.example.com"]})
    assert "map a group to a role" in invalid.value.problems[0].reason
    settings = parse_as(
        Settings,
        {
            "kind": "ldaps",
            "servers": ["dc1.example.com", "[2001:db8::1]:3269"],
            "base_dn": BASE_DN,
            "roles": ROLES,
        },
    )
    assert settings.addresses() == [("dc1.example.com", 636), ("2001:db8::1", 3269)]
    for field, value, reason in (
        ("servers", ["dc1:70000"], "a port is 1 to 65535"),
        ("servers", ["2001:db8::1"], "an IPv6 address in []"),
        ("ca_certificate", "-----BEGIN CERTIFICATE-----\nnot base64\n", "TLS can use"),
    ):
        with pytest.raises(Invalid) as invalid:
            parse_as(Settings, {"kind": "radius", "servers": ["r"], "default_role": "viewer",
                                field: value})  # fmt: skip
        assert [p.field for p in invalid.value.problems] == [field]
        assert reason in invalid.value.problems[0].reason


def test_the_highest_mapped_role_wins() -> None:
    settings = Settings.model_validate(
        {
            "kind": "radius",
            "servers": ["127.0.0.1"],
            "roles": [
                {"group": "ops", "role": "operator"},
                {"group": "CN=Admins,DC=example,DC=test", "role": "administrator"},
            ],
        }
    )
    assert role_of(settings, ["ops", "cn=admins, dc=example, dc=test"]) == Role.ADMINISTRATOR
    assert role_of(settings, ["cn=ops,ou=groups,dc=x"]) == Role.OPERATOR
    assert role_of(settings, ["others"]) is None


def test_active_directory_asks_for_nested_groups_in_one_search() -> None:
    assert in_chain_filter("member", "CN=Alice (IT),DC=x") == (
        "(member:1.2.840.113556.1.4.1941:=CN=Alice \\28IT\\29,DC=x)"
    )
