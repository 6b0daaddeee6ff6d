"""Two-factor sign-in in process, on the test's clock (the store's too, by which codes are
judged): enrolment on the account page, the second step of signing in, a wrong code and a
replayed one refused, recovery codes good once, the throttle, the administrator's reset (API,
WebUI, CLI's route), a role that must have a second factor enrolling before its session, and
an API key made from a session only with a code. The codes are RFC 6238's, computed here with
pyotp from the secret the page shows."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pyotp
import pytest
from fastapi.testclient import TestClient

from balancer import totp, users
from balancer.front.access import SESSION_COOKIE
from balancer.front.gate import SIGN_IN, Gate
from balancer.ha.sync import (
    RecoveryUsed,
    SecondFactorsUsed,
    StepUsed,
    UsersCopy,
    from_json,
    to_json,
)
from balancer.model import NodeSettings, Pair
from balancer.roles import Role
from balancer.store import Store, TwoFactor
from tests.appliance import appliance
from tests.webapp import PASSWORD, WebApp, csrf_of, sign_in_token, webapp

ACCOUNT = "/lbadmin/account/two-factor"


@pytest.fixture
def app(tmp_path: Path) -> Iterator[WebApp]:
    with webapp(tmp_path, wall_clock=True) as made:
        made.clock.now = 1_800_000_000.0  # a step's start: the test moves within and past it
        yield made


def code(secret: str, app: WebApp, steps: int = 0) -> str:
    return pyotp.TOTP(secret).at(app.clock.now + steps * totp.STEP)


def enrol(app: WebApp) -> tuple[str, list[str]]:
    """Turn on two-factor sign-in for loadbalancer on the account page; the secret and the
    recovery codes, as the pages show them."""
    csrf = app.sign_in()
    page = app.network.get(ACCOUNT).text
    assert "<svg" in page
    assert "QR code to scan" in page
    secret = re.search(r'name="secret" value="([A-Z2-7]+)"', page)
    assert secret is not None
    shown = re.search(r'id="secret" class="secret">([A-Z2-7 ]+)<', page)
    assert shown is not None
    assert shown.group(1).replace(" ", "") == secret.group(1)
    done = app.network.post(
        ACCOUNT,
        data={"csrf_token": csrf, "secret": secret.group(1), "code": code(secret.group(1), app)},
    )
    assert done.status_code == 200, done.text
    codes = re.findall(r"<li><code>([a-z0-9-]+)</code></li>", done.text)
    assert len(codes) == totp.RECOVERY_CODES
    app.network.cookies.clear()
    return secret.group(1), codes


def password_step(client: TestClient) -> str:
    """Sign in with the right password; the second step's page."""
    reply = client.post(
        SIGN_IN,
        data={
            "username": "loadbalancer",
            "password": PASSWORD,
            "csrf_token": sign_in_token(client),
        },
    )
    assert reply.status_code == 200
    return reply.text


def second_step(client: TestClient, typed: str) -> int:
    csrf = csrf_of(client.get(SIGN_IN).text)
    reply = client.post(SIGN_IN, data={"code": typed, "csrf_token": csrf}, follow_redirects=False)
    return reply.status_code


def signed_in(client: TestClient) -> bool:
    return client.get("/lbadmin/", follow_redirects=False).status_code == 200


def test_enrolment_then_a_code_a_replay_and_a_wrong_code(app: WebApp) -> None:
    secret, _ = enrol(app)
    assert app.store.two_factor("loadbalancer") is not None
    # The password alone opens no session: the second step asks for the code.
    page = password_step(app.network)
    assert 'id="code"' in page
    assert "authenticator app" in page
    assert not signed_in(app.network)
    assert second_step(app.network, "000000" if code(secret, app) != "000000" else "111111") == 401
    assert not signed_in(app.network)
    # The enrolment's own code was used up: it is refused as a replay, even moments later.
    app.clock.now += 5
    assert second_step(app.network, code(secret, app)) == 401
    # The next step's code signs in (once the clock has reached it, or within a step of it).
    app.clock.now += totp.STEP
    assert second_step(app.network, code(secret, app)) == 303
    assert signed_in(app.network)
    # The same code again, from another browser that knows the password: a replay.
    other = TestClient(app.network.app, base_url="https://balancer.test")
    password_step(other)
    assert second_step(other, code(secret, app)) == 401
    assert not signed_in(other)
    # A code two steps ahead is too far from this clock; the step after is taken (drift).
    assert second_step(other, code(secret, app, steps=2)) == 401
    assert second_step(other, code(secret, app, steps=1)) == 303
    entries = app.store.audit_log(action="sign_in", author="loadbalancer")
    assert entries[0].detail["second_factor"] == "code"
    assert all(secret not in str(e.detail) for e in app.store.audit_log(limit=1000))


def test_recovery_codes_each_sign_in_once(app: WebApp) -> None:
    _, codes = enrol(app)
    password_step(app.network)
    assert second_step(app.network, codes[3].upper()) == 303  # as typed from paper, any case
    assert signed_in(app.network)
    app.network.cookies.clear()
    password_step(app.network)
    assert second_step(app.network, codes[3]) == 401
    assert second_step(app.network, codes[4]) == 303
    found = app.store.two_factor("loadbalancer")
    assert found is not None
    assert len(found.recovery) == totp.RECOVERY_CODES - 2


def test_wrong_codes_are_throttled_with_the_password(app: WebApp) -> None:
    enrol(app)
    password_step(app.network)
    statuses = [second_step(app.network, "12345678901") for _ in range(4)]
    # The password's attempt counts too: the free failures are spent, then a wait.
    assert statuses[:2] == [401, 401]
    assert 429 in statuses
    csrf = csrf_of(app.network.get(SIGN_IN).text)
    waiting = app.network.post(SIGN_IN, data={"code": "12345678901", "csrf_token": csrf})
    assert waiting.status_code == 429
    assert int(waiting.headers["Retry-After"]) >= 1
    assert not signed_in(app.network)


def test_an_expired_second_step_starts_again(app: WebApp) -> None:
    secret, _ = enrol(app)
    password_step(app.network)
    app.clock.now += 301  # the ticket's lifetime
    reply = app.network.get(SIGN_IN)
    assert 'id="password"' in reply.text
    app.clock.now += totp.STEP
    assert second_step(app.network, code(secret, app)) == 303
    assert not signed_in(app.network)


def test_administrator_resets_a_second_factor(app: WebApp) -> None:
    enrol(app)
    users.add_user(app.store, "second", PASSWORD, author="test")
    # Through the API, on the Unix socket as `balancer users reset-two-factor` sends it.
    assert app.local.delete("/api/v1/users/loadbalancer/two-factor").status_code == 204
    assert app.store.two_factor("loadbalancer") is None
    assert app.local.delete("/api/v1/users/nobody/two-factor").status_code == 404
    entry = app.store.audit_log(action="two_factor_reset")[0]
    assert entry.target == "loadbalancer"
    assert entry.detail == {}
    # The password alone signs in again.
    csrf = app.sign_in()
    # And on Maintenance > Passwords: "second" enrols, the administrator resets it there.
    app.store.set_two_factor(
        "second", TwoFactor(totp.new_secret(), ()), author="test", action="two_factor_enrol"
    )
    listed = app.network.get("/lbadmin/maintenance/passwords").text
    assert 'aria-label="Reset the second factor of second"' in listed
    reply = app.network.post(
        "/lbadmin/maintenance/passwords/two-factor-reset",
        data={"csrf_token": csrf, "name": "second"},
    )
    assert reply.status_code == 200
    assert "The second factor of second was reset" in reply.text
    assert app.store.two_factor("second") is None


def test_a_role_that_must_have_a_second_factor_enrols_before_its_session(app: WebApp) -> None:
    app.local.put("/api/v1/two-factor", json={"required": ["administrator"]}).raise_for_status()
    assert app.local.get("/api/v1/two-factor").json() == {"required": ["administrator"]}
    page = password_step(app.network)
    assert "Set up two-factor sign-in" in page
    assert "<svg" in page
    assert not signed_in(app.network)
    secret = re.search(r'name="secret" value="([A-Z2-7]+)"', page)
    assert secret is not None
    # A wrong code keeps the same secret on the page, to try again.
    csrf = csrf_of(page)
    wrong = app.network.post(
        SIGN_IN, data={"csrf_token": csrf, "secret": secret.group(1), "code": "1"}
    )
    assert wrong.status_code == 422
    assert secret.group(1) in wrong.text
    done = app.network.post(
        SIGN_IN,
        data={"csrf_token": csrf, "secret": secret.group(1), "code": code(secret.group(1), app)},
    )
    assert done.status_code == 200
    assert len(re.findall(r"<li><code>[a-z0-9-]+</code></li>", done.text)) == totp.RECOVERY_CODES
    assert signed_in(app.network)
    assert app.store.two_factor("loadbalancer") is not None
    # A viewer, not required, signs in with the password alone.
    users.add_user(app.store, "viewer", PASSWORD, author="test")
    app.store.set_role("viewer", Role.VIEWER, author="test")
    app.network.cookies.clear()
    app.sign_in(user="viewer")
    # Maintenance > Passwords sets it too: ticked boxes, the rest unticked.
    app.network.cookies.clear()
    app.clock.now += totp.STEP
    password_step(app.network)
    assert second_step(app.network, code(secret.group(1), app)) == 303
    page = app.network.get("/lbadmin/maintenance/passwords").text
    assert 'name="required" value="administrator" checked' in page
    assert 'name="required" value="viewer">' in page
    done = app.network.post(
        "/lbadmin/maintenance/passwords/two-factor-required",
        data={"csrf_token": csrf_of(page), "required": ["viewer", "operator"]},
    )
    assert "Two-factor sign-in is now required of viewer, operator." in done.text
    assert app.store.two_factor_required() == {Role.VIEWER, Role.OPERATOR}
    # The viewer, now required, has no session before enrolling.
    viewer = TestClient(app.network.app, base_url="https://balancer.test")
    reply = viewer.post(
        SIGN_IN,
        data={"username": "viewer", "password": PASSWORD, "csrf_token": sign_in_token(viewer)},
    )
    assert "Set up two-factor sign-in" in reply.text
    assert not signed_in(viewer)


def test_an_api_key_from_a_session_needs_a_code(app: WebApp) -> None:
    secret, _ = enrol(app)
    password_step(app.network)
    app.clock.now += totp.STEP
    assert second_step(app.network, code(secret, app)) == 303
    csrf = csrf_of(app.network.get("/lbadmin/").text)
    headers = {"X-CSRF-Token": csrf}
    refused = app.network.post("/api/v1/api-keys", json={"name": "ci"}, headers=headers)
    assert refused.status_code == 422
    assert refused.json()["detail"][0]["field"] == "code"
    # This step's code signed the session in: it is a replay here.
    replay = app.network.post(
        "/api/v1/api-keys", json={"name": "ci", "code": code(secret, app)}, headers=headers
    )
    assert replay.status_code == 422
    app.clock.now += totp.STEP
    made = app.network.post(
        "/api/v1/api-keys", json={"name": "ci", "code": code(secret, app)}, headers=headers
    )
    assert made.status_code == 201, made.text
    # The key is not asked for a code, neither to be used nor to make another.
    key = {"Authorization": f"Bearer {made.json()['key']}"}
    assert (
        app.network.post("/api/v1/api-keys", json={"name": "more"}, headers=key).status_code == 201
    )
    # The WebUI's form asks for it too.
    page = app.network.get("/lbadmin/maintenance/passwords").text
    assert 'id="key-code"' in page
    form = app.network.post(
        "/lbadmin/maintenance/passwords/api-keys", data={"csrf_token": csrf, "name": "web"}
    )
    assert form.status_code == 422
    assert "code" in form.text


def test_turn_off_needs_a_current_code(app: WebApp) -> None:
    secret, _ = enrol(app)
    password_step(app.network)
    app.clock.now += totp.STEP
    assert second_step(app.network, code(secret, app)) == 303
    csrf = csrf_of(app.network.get(ACCOUNT).text)
    # A session alone cannot put another app in place of the one enrolled.
    other = totp.new_secret()
    replaced = app.network.post(
        ACCOUNT, data={"csrf_token": csrf, "secret": other, "code": code(other, app)}
    )
    assert replaced.status_code == 422
    assert "on already" in replaced.text
    kept = app.store.two_factor("loadbalancer")
    assert kept is not None
    assert kept.secret == secret
    refused = app.network.post(f"{ACCOUNT}/off", data={"csrf_token": csrf, "code": "123"})
    assert refused.status_code == 422
    assert app.store.two_factor("loadbalancer") is not None
    app.clock.now += totp.STEP
    done = app.network.post(
        f"{ACCOUNT}/off", data={"csrf_token": csrf, "code": code(secret, app), "then": "off"}
    )
    assert done.status_code == 200
    assert "Two-factor sign-in is off" in done.text
    assert app.store.two_factor("loadbalancer") is None


def test_the_command_line_resets_a_second_factor_and_sets_the_roles(tmp_path: Path) -> None:
    with appliance(tmp_path) as box, Store(box.data_dir / "balancer.db") as store:
        enrolled = TwoFactor(totp.new_secret(), ())
        store.set_two_factor("loadbalancer", enrolled, author="test", action="two_factor_enrol")
        done = box.cli("user", "reset-two-factor", "loadbalancer")
        assert done.returncode == 0, done.stderr
        assert done.stdout == "the second factor of loadbalancer is reset\n"
        assert store.two_factor("loadbalancer") is None
        missing = box.cli("user", "reset-two-factor", "nobody")
        assert missing.returncode != 0
        assert "nobody" in missing.stderr
        assert "Traceback" not in missing.stderr
        done = box.cli("user", "two-factor-required", "administrator", "operator")
        assert done.stdout == "must have a second factor: operator, administrator\n"
        assert store.two_factor_required() == {Role.ADMINISTRATOR, Role.OPERATOR}
        assert box.cli("user", "two-factor-required").stdout == done.stdout
        done = box.cli("user", "two-factor-required", "--none")
        assert done.stdout == "must have a second factor: no role\n"
        assert store.two_factor_required() == frozenset()


def test_a_secondary_asks_for_the_same_codes(app: WebApp, tmp_path: Path) -> None:
    secret, codes = enrol(app)
    snapshot = app.store.users_snapshot()
    sent = from_json(json.loads(json.dumps(to_json(UsersCopy(snapshot.mark, snapshot)))))
    assert isinstance(sent, UsersCopy)
    with Store(tmp_path / "secondary.db", clock=app.clock) as secondary:
        secondary.receive_users(sent.users, author="peer")
        assert secondary.two_factor("loadbalancer") == app.store.two_factor("loadbalancer")
        assert secondary.received_users() == snapshot.mark
        app.clock.now += totp.STEP
        assert totp.check(secondary, "loadbalancer", code(secret, app), app.clock.now) == "code"
        # Used there, refused there again: each node keeps its own record of used steps.
        assert totp.check(secondary, "loadbalancer", code(secret, app), app.clock.now) is None
        # A Secondary keeps the users as the Primary sent them: a recovery code typed there
        # counts as used there, aside, and signs in once.
        secondary.save_node_settings(
            NodeSettings(
                pair=Pair(role="secondary", local_address="127.0.0.1", peer_address="127.0.0.2")
            ),
            author="test",
        )
        now = app.clock.now
        assert totp.check(secondary, "loadbalancer", codes[0], now) == "recovery"
        assert totp.check(secondary, "loadbalancer", codes[0], now) is None
        kept = secondary.two_factor("loadbalancer")
        assert kept is not None
        assert len(kept.recovery) == totp.RECOVERY_CODES - 1
        assert secondary.received_users() == snapshot.mark  # still the Primary's copy
        assert [e.action for e in secondary.audit_log(limit=1)] == [
            "two_factor_recovery_on_secondary"
        ]
        # What the Primary must refuse too: the step and the recovery code used there.
        used = secondary.second_factors_used(int(now // totp.STEP) - 2)
        step = int(now // totp.STEP)
        digest = totp.recovery_digest(codes[0])
        assert used == SecondFactorsUsed(
            (StepUsed("loadbalancer", step),), (RecoveryUsed("loadbalancer", digest),)
        )
        assert secondary.second_factors_used(step + 1).steps == ()
        # Told so, the Primary takes both, uses the code up, and its next copy of the users
        # no longer lists it: the Secondary forgets it then.
        assert app.store.learn_second_factors(used) == 2
        assert app.store.learn_second_factors(used) == 0
        assert totp.check(app.store, "loadbalancer", code(secret, app), now) is None
        assert totp.check(app.store, "loadbalancer", codes[0], now) is None
        audited = app.store.audit_log(action="two_factor_recovery")[0]
        assert audited.detail == {"left": totp.RECOVERY_CODES - 1, "used_on": "the Secondary"}
        newer = app.store.users_snapshot()
        assert newer.version > snapshot.version
        secondary.receive_users(newer, author="peer")
        assert secondary.second_factors_used(0).recovery == ()
        assert secondary.two_factor("loadbalancer") == app.store.two_factor("loadbalancer")
        assert totp.check(secondary, "loadbalancer", codes[0], now) is None
        assert totp.check(secondary, "loadbalancer", codes[1], now) == "recovery"


def test_a_directory_user_has_no_second_factor_here(app: WebApp) -> None:
    # A directory user's session as Access.sign_in opens it: no password hash, a mapped role.
    (access,) = (m.kwargs["access"] for m in app.network.app.user_middleware if m.cls is Gate)
    cookie = access.sessions.open("dora", None, Role.OPERATOR)
    with TestClient(app.network.app, base_url="https://balancer.test") as directory_user:
        directory_user.cookies.set(SESSION_COOKIE, cookie)
        page = directory_user.get(ACCOUNT)
        assert page.status_code == 200
        assert "dora signs in through the directory" in page.text
        assert "<svg" not in page.text
