"""Users, passwords and API keys in the store: hashed, audited, revocable; and `balancer init`."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from balancer import first_start, users
from balancer.configuration import Missing
from balancer.ha.sync import Users
from balancer.roles import Role
from balancer.store import MIGRATIONS, Store
from balancer.validate import Invalid


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "balancer.db") as opened:
        yield opened


def test_a_password_is_kept_as_an_argon2id_hash_and_verified(store: Store) -> None:
    users.add_user(store, "alice", "correct horse", author="root")
    kept = store.password_hash("alice")
    assert kept is not None
    assert kept.startswith("$argon2id$")
    assert "correct horse" not in kept
    assert users.verify(store, "alice", "correct horse") == kept
    assert users.verify(store, "alice", "Correct horse") is None
    assert users.verify(store, "bob", "correct horse") is None
    assert users.verify(store, "alice", "correct horse" * 100) is None


def test_a_new_password_replaces_the_old_one(store: Store) -> None:
    users.add_user(store, "alice", "first password", author="root")
    users.set_password(store, "alice", "second password", author="alice")
    assert users.verify(store, "alice", "first password") is None
    assert users.verify(store, "alice", "second password") is not None
    with pytest.raises(Missing, match="there is no user 'bob'"):
        users.set_password(store, "bob", "second password", author="alice")


@pytest.mark.parametrize(
    ("name", "password", "field"),
    [
        ("alice", "short", "password"),
        ("alice", "x" * 1025, "password"),
        ("Alice", "long enough", "name"),
        ("9lives", "long enough", "name"),
        ("", "long enough", "name"),
        ("a" * 33, "long enough", "name"),
    ],
)
def test_bad_names_and_passwords_are_refused(
    store: Store, name: str, password: str, field: str
) -> None:
    with pytest.raises(Invalid) as refused:
        users.add_user(store, name, password, author="root")
    assert [p.field for p in refused.value.problems] == [field]
    assert store.users() == []


def test_the_last_user_cannot_be_removed_and_a_removed_users_keys_are_revoked(
    store: Store,
) -> None:
    users.add_user(store, "alice", "the first user's password", author="root")
    users.add_user(store, "bob", "the second user's password", author="alice")
    with pytest.raises(Invalid, match="already a user 'bob'"):
        users.add_user(store, "bob", "the second user's password", author="alice")
    _, key = users.add_api_key(store, "monitoring", "bob", author="alice")
    assert store.api_key_caller(users.key_digest(key)) == ("bob", Role.ADMINISTRATOR)
    store.remove_user("bob", author="alice")
    assert [u.name for u in store.users()] == ["alice"]
    assert store.api_key_caller(users.key_digest(key)) is None
    assert store.api_keys()[0].revoked is not None
    with pytest.raises(Invalid, match="last user"):
        store.remove_user("alice", author="alice")
    with pytest.raises(Missing):
        store.remove_user("bob", author="alice")


def test_an_api_key_is_kept_as_a_digest_and_works_until_revoked(
    store: Store, tmp_path: Path
) -> None:
    users.add_user(store, "alice", "the first user's password", author="root")
    made, key = users.add_api_key(store, "ci pipeline", "alice", author="alice")
    assert key.startswith(users.KEY_PREFIX)
    assert store.api_key_caller(users.key_digest(key)) == ("alice", Role.ADMINISTRATOR)
    assert store.api_key_caller(users.key_digest(key + "x")) is None
    with closing(sqlite3.connect(tmp_path / "balancer.db")) as db:
        dump = "\n".join(db.iterdump())
    assert key not in dump
    assert key.removeprefix(users.KEY_PREFIX) not in dump

    revoked = store.revoke_api_key(made.id, author="alice")
    assert revoked.revoked is not None
    assert store.api_key_caller(users.key_digest(key)) is None
    assert store.revoke_api_key(made.id, author="alice") == revoked  # again: nothing changes
    with pytest.raises(Missing):
        store.revoke_api_key(made.id + 1, author="alice")
    with pytest.raises(Invalid, match="no user 'carol'"):
        users.add_api_key(store, "x", "carol", author="alice")
    with pytest.raises(Invalid, match="1 to 64"):
        users.add_api_key(store, " ", "alice", author="alice")


def test_changes_to_users_and_keys_are_audited_without_secrets(store: Store) -> None:
    users.add_user(store, "alice", "the first user's password", author="root")
    users.set_password(store, "alice", "the first user's new password", author="alice")
    made, key = users.add_api_key(store, "ci", "alice", author="alice")
    store.revoke_api_key(made.id, author="root")
    log = store.audit_log()
    assert [(e.author, e.action, e.target) for e in reversed(log)] == [
        ("root", "add_user", "alice"),
        ("alice", "password", "alice"),
        ("alice", "add_api_key", "alice"),
        ("root", "revoke_api_key", "alice"),
    ]
    assert key not in repr(log)
    assert "argon2" not in repr(log)


def test_the_first_start_makes_a_password_once(store: Store) -> None:
    password = first_start.first_password(store)
    assert password is not None
    assert users.weak(password, "loadbalancer") is None
    assert users.verify(store, "loadbalancer", password) is not None
    assert first_start.first_password(store) is None
    assert first_start.announce(password).count(password) == 1


def test_generated_passwords_differ() -> None:
    assert len({users.generate_password() for _ in range(50)}) == 50


@pytest.mark.parametrize(
    ("name", "password", "reason"),
    [
        ("alice", "Alice-in-Wonderland-7", "contains the user's name, alice"),
        (
            "bob",
            "p4ssw0rd!!2026",
            "is a common password (p4ssw0rd, with digits or signs around it)",
        ),
        ("bob", "eleven char", "must be at least 12 characters long"),
        ("bob", "abababababab", "has fewer than 5 different characters"),
        # A name this short is inside too many good passwords to refuse them for it.
        ("al", "totally alright", None),
    ],
)
def test_a_weak_password_is_refused_wherever_it_is_set_naming_the_field(
    store: Store, name: str, password: str, reason: str | None
) -> None:
    """The check of `balancer setup` (first_start.weak), for every user and every change."""
    assert users.weak(password, name) == first_start.weak(password, name) == reason
    if reason is None:
        users.add_user(store, name, password, author="root")
        return
    with pytest.raises(Invalid) as refused:
        users.add_user(store, name, password, author="root")
    assert [(p.field, p.reason) for p in refused.value.problems] == [("password", reason)]
    users.add_user(store, name, "a strong one for the test", author="root")
    with pytest.raises(Invalid) as refused:
        users.set_password(store, name, password, author="root")
    assert [(p.field, p.reason) for p in refused.value.problems] == [("password", reason)]
    assert users.verify(store, name, "a strong one for the test") is not None


def test_a_made_password_passes_the_check_for_its_user() -> None:
    for name in ("loadbalancer", "ops", "a2c", "k9z"):
        assert all(users.weak(users.generate_password(name), name) is None for _ in range(200))


def test_the_schema_is_migrated_from_the_first_version(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with closing(sqlite3.connect(path)) as db:
        for statement in MIGRATIONS[0]:
            db.execute(statement)
        db.execute("PRAGMA user_version = 1")
        db.commit()
    with Store(path) as store:
        users.add_user(store, "alice", "the first user's password", author="root")
        assert [u.name for u in store.users()] == ["alice"]


def balancer_init(data_dir: Path, stdin: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "balancer", "init", "--dir", str(data_dir), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_balancer_init_sets_the_password_or_makes_one(tmp_path: Path) -> None:
    data_dir = tmp_path / "appliance"
    given = balancer_init(data_dir, "my own password\n", "--password-stdin")
    assert given.returncode == 0, given.stderr
    assert given.stdout == "password of loadbalancer set\n"
    assert (data_dir / "webui.pem").exists()
    with Store(data_dir / "balancer.db") as store:
        assert users.verify(store, "loadbalancer", "my own password") is not None

    made = balancer_init(data_dir, "")  # not a terminal and no --password-stdin: make one
    assert made.returncode == 0, made.stderr
    password = made.stdout.split("password\n\n    ")[1].split()[0]
    with Store(data_dir / "balancer.db") as store:
        assert users.verify(store, "loadbalancer", password) is not None
        assert users.verify(store, "loadbalancer", "my own password") is None

    short = balancer_init(data_dir, "short\n", "--password-stdin")
    assert short.returncode == 1
    assert short.stderr == "error: password: must be at least 12 characters long\n"


def test_the_users_version_grows_with_each_change_and_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "balancer.db"
    with Store(path) as store:
        assert store.users_version() == 0
        seen = [store.users_version()]
        users.add_user(store, "alice", "the first user's password", author="root")
        seen.append(store.users_version())
        users.set_password(store, "alice", "the first user's new password", author="alice")
        seen.append(store.users_version())
        made, _ = users.add_api_key(store, "ci", "alice", author="alice")
        seen.append(store.users_version())
        store.revoke_api_key(made.id, author="alice")
        seen.append(store.users_version())
        users.add_user(store, "bob", "the second user's password", author="root")
        store.remove_user("bob", author="root")
        seen.append(store.users_version())
        store.audit(author="root", action="sign_in")  # not a change of users or keys
        assert store.users_version() == seen[-1]
    assert seen == sorted(set(seen))
    with Store(path) as reopened:
        assert reopened.users_version() == seen[-1]
        assert reopened.users_snapshot().version == seen[-1]


def test_a_secondary_receives_the_primarys_users_and_keys(tmp_path: Path) -> None:
    with Store(tmp_path / "primary.db") as primary, Store(tmp_path / "secondary.db") as secondary:
        users.add_user(primary, "alice", "the first user's password", author="root")
        users.add_user(primary, "bob", "the second user's password", author="root")
        users.set_password(primary, "bob", "the second user's new password", author="bob")
        kept, kept_key = users.add_api_key(primary, "ci", "alice", author="alice")
        gone, gone_key = users.add_api_key(primary, "old", "bob", author="bob")
        primary.revoke_api_key(gone.id, author="bob")
        users.add_user(secondary, "carol", "the third user's password", author="root")
        users.add_api_key(secondary, "own", "carol", author="carol")
        assert secondary.received_users() is None

        sent = primary.users_snapshot()
        secondary.receive_users(sent, author="primary")

        for name in ("alice", "bob", "carol"):
            assert secondary.password_hash(name) == primary.password_hash(name)
        assert secondary.users() == primary.users()
        assert secondary.api_keys() == primary.api_keys()
        assert secondary.api_key_caller(users.key_digest(kept_key)) == ("alice", Role.ADMINISTRATOR)
        assert secondary.api_key_caller(users.key_digest(gone_key)) is None
        assert users.verify(secondary, "bob", "the second user's new password") is not None
        assert secondary.users_snapshot().digest == sent.digest
        assert secondary.received_users() == sent.mark
        (entry,) = secondary.audit_log(action="receive_users")
        expected = {"version": sent.version, "digest": sent.digest, "users": 2, "keys": 2}
        assert entry.detail == expected
        assert "argon2" not in repr(entry)

        # A key made here later takes a new id, not one of the Primary's; and a change here
        # makes what the Secondary holds no longer the Primary's snapshot.
        made, _ = users.add_api_key(secondary, "later", "alice", author="alice")
        assert made.id > gone.id > kept.id
        assert secondary.received_users() is None


def test_a_snapshot_without_users_is_refused_and_changes_nothing(store: Store) -> None:
    users.add_user(store, "alice", "the first user's password", author="root")
    users.add_api_key(store, "ci", "alice", author="alice")
    before = store.users_snapshot()
    with pytest.raises(Invalid, match="users: the snapshot has no user: nobody could sign in"):
        store.receive_users(Users(before.version + 1, (), before.keys), author="primary")
    assert store.users_snapshot() == before
