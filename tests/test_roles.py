"""Who may do what (balancer.roles), in process: every route the application has, asked by every
role, answers as the one table says; the roles are set, narrowed and kept as the store says."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.routing import APIRoute, iter_route_contexts
from starlette.routing import Mount, Route
from typer._click import Context
from typer.main import get_command

from balancer import cli, roles, users
from balancer.configuration import Missing
from balancer.roles import COMMANDS, ROUTES, Role
from balancer.store import Store
from balancer.validate import Invalid
from tests.webapp import PASSWORD, WebApp, csrf_of, webapp

GUIDE_VIP = {"label": "CyberArk-PSM", "ip": "192.168.94.100", "ports": "3389"}
GUIDE_RIP = {"label": "PSM1", "ip": "192.168.94.11"}


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebApp]:
    with webapp(tmp_path_factory.mktemp("roles")) as running:
        for role in (Role.VIEWER, Role.OPERATOR):
            users.add_user(running.store, role, PASSWORD, role, author="test")
        yield running


def key_of(app: WebApp, owner: str, role: Role | None = None) -> dict[str, str]:
    _, key = users.add_api_key(app.store, f"{owner}'s", owner, role, author="test")
    return {"Authorization": f"Bearer {key}"}


def declared(app: WebApp) -> list[tuple[str, str]]:
    """(method, path template) of every route the application has."""
    found = []
    for context in iter_route_contexts(app.network.app.routes):  # type: ignore[attr-defined]
        route = context.original_route
        if isinstance(route, APIRoute | Route):
            methods = sorted(set(route.methods or ()) - {"HEAD"})
            found += [(method, context.path or "") for method in methods]
        elif isinstance(route, Mount):
            found.append(("GET", f"{context.path}/{{path:path}}"))
    return found


def filled(template: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", template)


def test_every_route_has_its_row_and_every_row_its_route(app: WebApp) -> None:
    routes = declared(app)
    assert len(routes) > 100  # the API's and the WebUI's, not an empty walk
    missing = [route for route in routes if route not in ROUTES]
    assert missing == [], "routes without a row in balancer/roles.py ROUTES"
    assert sorted(set(ROUTES) - set(routes)) == [], "rows of routes there are not"
    # Each route is found under its own row when asked, not under a neighbour's.
    for method, template in routes:
        assert roles.route(method, filled(template)) == template, (method, template)


def refused_for_role(reply_status: int, text: str) -> bool:
    return reply_status == 403 and ("needs the role" in text or "Not for your role" in text)


@pytest.mark.parametrize("role", list(Role))
def test_every_route_asked_by_every_role_answers_as_the_table_says(app: WebApp, role: Role) -> None:
    owner = "loadbalancer" if role is Role.ADMINISTRATOR else role
    bearer = key_of(app, owner)
    refused = []
    for method, template in declared(app):
        least = roles.needed(method, filled(template))
        if least is None or template.startswith("/api/v1/peer/"):
            continue  # no role is asked there (tests/test_access.py walks those)
        if role >= least and method != "GET":
            continue  # what the role may change is not changed here: one sample follows
        reply = app.network.request(method, filled(template), headers=bearer)
        if refused_for_role(reply.status_code, reply.text):
            refused.append((method, template))
            if template.startswith("/api/"):
                reason = reply.json()["detail"][0]
                assert reason["field"] == "role"
                assert f"needs the role {least} or above" in reason["reason"]
                assert f"has the role {role}" in reason["reason"]
    expected = {
        (method, template)
        for method, template in declared(app)
        if (least := roles.needed(method, filled(template))) is not None
        and not template.startswith("/api/v1/peer/")
        and role < least
    }
    assert set(refused) == expected
    assert app.stopped == []  # no shutdown went through


def test_a_viewer_reads_an_operator_drains_and_commits_an_administrator_changes(
    app: WebApp,
) -> None:
    viewer, operator = key_of(app, "viewer"), key_of(app, "operator")
    administrator = key_of(app, "loadbalancer")
    base = "/api/v1/virtual-services"
    assert app.network.post(base, json=GUIDE_VIP, headers=operator).status_code == 403
    made = app.network.post(base, json=GUIDE_VIP, headers=administrator)
    assert made.status_code == 201, made.text
    rip = f"{base}/CyberArk-PSM/real-servers"
    assert app.network.post(rip, json=GUIDE_RIP, headers=administrator).status_code == 201
    # Saved by the administrator, committed by the operator; the viewer only watches.
    assert app.network.post("/api/v1/commit", headers=viewer).status_code == 403
    committed = app.network.post("/api/v1/commit", headers=operator)
    assert committed.status_code == 200, committed.text
    assert app.store.audit_log(1)[0].author == "operator"
    drain = {"state": "drain"}
    state = f"{rip}/PSM1/state"
    assert app.network.post(state, json=drain, headers=viewer).status_code == 403
    drained = app.network.post(state, json=drain, headers=operator)
    assert drained.status_code < 300, drained.text
    assert app.network.get(base, headers=viewer).json()[0]["label"] == "CyberArk-PSM"


def test_a_key_is_never_wider_than_its_owner_and_narrows_with_them(app: WebApp) -> None:
    with pytest.raises(Invalid, match="administrator is wider than operator's own role"):
        users.add_api_key(app.store, "wide", "operator", Role.ADMINISTRATOR, author="test")
    admin = key_of(app, "loadbalancer")
    wide = {"name": "wide", "owner": "viewer", "role": "operator"}
    refused = app.network.post("/api/v1/api-keys", json=wide, headers=admin)
    assert refused.status_code == 422
    assert refused.json()["detail"][0]["field"] == "role"
    narrow = key_of(app, "loadbalancer", Role.VIEWER)
    reply = app.network.post("/api/v1/commit", headers=narrow)
    assert reply.status_code == 403
    assert reply.json()["detail"][0]["reason"] == (
        "this needs the role operator or above; this API key of loadbalancer's has the role viewer"
    )
    users.add_user(app.store, "carol", PASSWORD, author="test")
    carol = key_of(app, "carol", Role.OPERATOR)
    assert app.network.get("/api/v1/users", headers=carol).status_code == 403  # its own role
    app.store.set_role("carol", Role.VIEWER, author="test")
    assert app.network.post("/api/v1/commit", headers=carol).status_code == 403  # the owner's
    app.store.remove_user("carol", author="test")


def test_a_role_changed_holds_at_the_next_request_of_an_open_session(app: WebApp) -> None:
    users.add_user(app.store, "dave", PASSWORD, Role.OPERATOR, author="test")
    app.network.cookies.clear()
    app.sign_in(user="dave")
    page = app.network.get("/lbadmin/")
    assert page.status_code == 200
    assert "Local Configuration" not in page.text  # not in an operator's menu
    app.store.set_role("dave", Role.VIEWER, author="test")
    csrf = csrf_of(app.network.get("/lbadmin/").text)
    form = {"csrf_token": csrf, "service": "x", "server": "y", "state": "drain"}
    refused = app.network.post("/lbadmin/overview/state", data=form)
    assert refused.status_code == 403
    assert "needs the role operator or above, and dave has the role viewer" in refused.text
    assert "Not for your role" in refused.text
    assert 'aria-label="Main menu"' in refused.text  # a page of the WebUI's, with its menu
    app.store.set_role("dave", Role.ADMINISTRATOR, author="test")
    assert app.network.get("/lbadmin/local-configuration").status_code == 200
    app.network.post("/lbadmin/sign-out", data={"csrf_token": csrf})
    app.network.cookies.clear()
    app.store.remove_user("dave", author="test")


def test_roles_are_set_through_the_api(app: WebApp) -> None:
    admin = key_of(app, "loadbalancer")
    body = {"name": "erin", "password": PASSWORD, "role": "viewer"}
    made = app.network.post("/api/v1/users", json=body, headers=admin)
    assert made.status_code == 201, made.text
    assert made.json()["role"] == "viewer"
    changed = app.network.put("/api/v1/users/erin/role", json={"role": "operator"}, headers=admin)
    assert changed.status_code == 204
    listed = {u["name"]: u["role"] for u in app.network.get("/api/v1/users", headers=admin).json()}
    assert listed["erin"] == "operator"
    bad = app.network.put("/api/v1/users/erin/role", json={"role": "root"}, headers=admin)
    assert bad.status_code == 422
    app.network.delete("/api/v1/users/erin", headers=admin)


def test_the_last_administrator_is_kept(tmp_path: Path) -> None:
    with Store(tmp_path / "balancer.db") as store:
        users.add_user(store, "alice", PASSWORD, author="root")
        users.add_user(store, "bob", PASSWORD, Role.VIEWER, author="root")
        with pytest.raises(Invalid, match="'alice' is the last administrator"):
            store.set_role("alice", Role.OPERATOR, author="root")
        with pytest.raises(Invalid, match="'alice' is the last administrator"):
            store.remove_user("alice", author="root")
        store.remove_user("bob", author="root")  # not an administrator: no question
        with pytest.raises(Missing, match="no user 'bob'"):
            store.set_role("bob", Role.VIEWER, author="root")
        users.add_user(store, "carol", PASSWORD, author="root")
        store.set_role("alice", Role.VIEWER, author="root")  # carol is one still
        assert {u.name: u.role for u in store.users()} == {
            "alice": Role.VIEWER,
            "carol": Role.ADMINISTRATOR,
        }
        assert store.audit_log(1)[0].action == "role"


def test_roles_travel_with_the_users_to_a_secondary(tmp_path: Path) -> None:
    with Store(tmp_path / "primary.db") as primary, Store(tmp_path / "secondary.db") as secondary:
        users.add_user(primary, "alice", PASSWORD, author="root")
        users.add_user(primary, "bob", PASSWORD, Role.OPERATOR, author="root")
        _, key = users.add_api_key(primary, "grafana", "bob", Role.VIEWER, author="root")
        before = primary.users_snapshot()
        primary.set_role("bob", Role.VIEWER, author="root")
        after = primary.users_snapshot()
        assert after.version > before.version
        assert after.digest != before.digest
        secondary.receive_users(after, author="peer")
        assert secondary.role("bob") is Role.VIEWER
        assert secondary.api_key_caller(users.key_digest(key)) == ("bob", Role.VIEWER)
        assert secondary.api_keys()[0].role is Role.VIEWER


def test_every_command_has_its_row() -> None:
    root = get_command(cli.app)
    context = Context(root)
    found = []
    for name in root.list_commands(context):  # type: ignore[attr-defined]
        command = root.get_command(context, name)  # type: ignore[attr-defined]
        if hasattr(command, "list_commands"):
            found += [f"{name} {sub}" for sub in command.list_commands(context)]
        else:
            found.append(name)
    assert sorted(found) == sorted(COMMANDS)
