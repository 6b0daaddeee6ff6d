"""The store, on real SQLite files: revisions, applied, audit, node settings, backups, crashes."""

from __future__ import annotations

import copy
import hashlib
import json
import random
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from balancer.configuration import (
    add_real_server,
    add_virtual_service,
    modify_real_server,
    modify_virtual_service,
    remove_virtual_service,
)
from balancer.controller import Controller
from balancer.edits import Edit
from balancer.model import Config, NodeSettings
from balancer.store import (
    MIGRATIONS,
    Applied,
    Conflict,
    Mismatch,
    NotFound,
    Revision,
    Store,
    StoreError,
    digest,
)
from balancer.validate import Invalid
from tests.webapp import FakeEngine


def restore(store: Store, document: Any, *, base: int, author: str) -> Revision:
    """A backup restored as the API and the WebUI restore it."""
    return Controller(store, FakeEngine()).save(Edit.restore(document), base=base, author=author)


def psm(*servers: str, label: str = "CyberArk-PSM", port: str = "3389") -> Config:
    """The guide's RDP service with one real server per address."""
    return Config.model_validate(
        {
            "virtual_services": [
                {
                    "label": label,
                    "ip": "192.168.85.100",
                    "ports": port,
                    "real_servers": [
                        {"label": f"PSM{n}", "ip": ip} for n, ip in enumerate(servers, 1)
                    ],
                }
            ]
        }
    )


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        self.now += 1
        return self.now


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "balancer.db"


@pytest.fixture
def store(path: Path) -> Iterator[Store]:
    with Store(path) as opened:
        yield opened


def integrity(path: Path) -> list[tuple[str]]:
    with closing(sqlite3.connect(path)) as db:
        return db.execute("PRAGMA integrity_check").fetchall()


def test_first_open_holds_revision_0_with_an_empty_config(store: Store) -> None:
    head = store.head()
    assert (head.id, head.author, head.config) == (0, "system", Config())
    assert store.revisions() == [head]
    assert store.applied() is None
    assert store.audit_log() == []


def test_save_makes_a_new_head(path: Path) -> None:
    with Store(path, clock=Clock()) as store:
        one = store.save(psm("192.168.85.10"), base=0, author="alice", message="add PSM")
        two = store.save(psm("192.168.85.10", "192.168.85.11"), base=1, author="bob", message="2")
        assert (one.id, two.id) == (1, 2)
        assert one.created < two.created
        assert store.head() == two
        assert store.revision(1) == one
        assert store.revision(1).config == psm("192.168.85.10")
        assert [r.id for r in store.revisions()] == [2, 1, 0]
        assert store.revisions(limit=2) == [two, one]


def test_a_revision_that_does_not_exist_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound, match="no revision 7"):
        store.revision(7)


def test_a_stale_base_conflicts_and_writes_nothing(store: Store) -> None:
    store.save(psm("192.168.85.10"), base=0, author="alice", message="first")
    with pytest.raises(Conflict, match="revision 0 is no longer the newest"):
        store.save(psm("192.168.85.11"), base=0, author="bob", message="late")
    assert store.head().id == 1
    assert [entry.author for entry in store.audit_log()] == ["alice"]


def test_two_stores_on_one_file_see_each_others_saves(path: Path) -> None:
    with Store(path) as first, Store(path) as second:
        first.save(psm("192.168.85.10"), base=0, author="alice", message="first")
        with pytest.raises(Conflict):
            second.save(psm("192.168.85.11"), base=0, author="bob", message="late")
        assert second.head().author == "alice"


def test_an_invalid_config_raises_and_writes_nothing(store: Store) -> None:
    service = psm("192.168.85.10").virtual_services[0]
    twice = Config(virtual_services=(service, service))
    with pytest.raises(Invalid) as raised:
        store.save(twice, base=0, author="alice", message="twice")
    assert [p.field for p in raised.value.problems] == ["virtual_services[CyberArk-PSM].label"]
    assert store.head().id == 0
    assert store.audit_log() == []


def test_applied_is_recorded_apart_from_head(path: Path) -> None:
    with Store(path, clock=Clock()) as store:
        store.save(psm("192.168.85.10"), base=0, author="alice", message="one")
        applied = store.mark_applied(1, author="alice")
        assert store.applied() == applied == Applied(1, applied.at, "alice")
        store.save(psm("192.168.85.11"), base=1, author="bob", message="two")
        assert (store.head().id, store.applied()) == (2, applied)  # saved, not committed
        later = store.mark_applied(2, author="bob")
        assert store.applied() == later
        assert later.at > applied.at


def test_applying_a_missing_revision_is_not_found_and_writes_nothing(store: Store) -> None:
    with pytest.raises(NotFound):
        store.mark_applied(3, author="alice")
    assert store.applied() is None
    assert store.audit_log() == []


def test_every_change_is_audited_with_its_author(store: Store) -> None:
    store.save(psm("192.168.85.10"), base=0, author="alice", message="add", target="CyberArk-PSM")
    store.mark_applied(1, author="bob")
    store.save_node_settings(NodeSettings(hostname="lb01"), author="carol")
    store.audit(author="dave", action="login", detail={"from": "10.0.0.9"})
    log = store.audit_log()
    assert [(e.author, e.action) for e in log] == [
        ("dave", "login"),
        ("carol", "node_settings"),
        ("bob", "commit"),
        ("alice", "change"),
    ]
    assert log[3].target == "CyberArk-PSM"
    assert log[3].detail == {"revision": 1, "message": "add"}
    assert log[2].detail == {"revision": 1}
    assert log[1].detail["settings"]["hostname"] == "lb01"
    assert log[0].detail == {"from": "10.0.0.9"}
    assert [e.id for e in log] == sorted((e.id for e in log), reverse=True)
    assert store.audit_log(author="bob") == [log[2]]
    assert store.audit_log(action="change") == [log[3]]
    assert store.audit_log(author="bob", action="change") == []
    assert store.audit_log(limit=2) == log[:2]


def test_node_settings_are_defaults_until_saved(store: Store) -> None:
    assert store.node_settings() == NodeSettings()
    settings = NodeSettings(hostname="lb01", https_port=8443, http_port=9080)
    store.save_node_settings(settings, author="alice")
    assert store.node_settings() == settings
    assert store.head().id == 0  # node settings are not a revision of the configuration


def test_export_then_restore_gives_the_same_config(path: Path) -> None:
    clock = Clock()
    with Store(path, clock=clock) as store:
        config = psm("192.168.85.10", "192.168.85.11")
        store.save(config, base=0, author="alice", message="two PSM servers")
        store.save_node_settings(NodeSettings(hostname="lb01"), author="alice")
        document = store.export()
        assert set(document) == {"format", "version", "exported", "revision", "digest", "config"}
        assert (document["format"], document["version"]) == ("balancer-configuration", 2)
        assert (document["revision"], document["digest"]) == (1, digest(config))
        assert datetime.fromisoformat(document["exported"]) == datetime.fromtimestamp(
            clock.now, UTC
        )
        assert document["config"]["virtual_services"][0]["ports"] == "3389"
        store.save(Config(), base=1, author="bob", message="oops, everything gone")
        restored = restore(store, document, base=2, author="carol")
        assert (restored.id, restored.config, restored.author) == (3, config, "carol")
        assert restored.message == "restored from a backup of revision 1"
        entry = store.audit_log(limit=1)[0]
        assert (entry.author, entry.action, entry.detail["revision"]) == ("carol", "restore", 3)


def test_export_of_an_earlier_revision(store: Store) -> None:
    store.save(psm("192.168.85.10"), base=0, author="alice", message="one")
    store.save(psm("192.168.85.11"), base=1, author="alice", message="two")
    document = store.export(1)
    assert document["revision"] == 1
    assert Config.model_validate(document["config"]) == psm("192.168.85.10")
    with pytest.raises(NotFound):
        store.export(9)


def _document(store: Store) -> dict[str, Any]:
    store.save(psm("192.168.85.10", "192.168.85.11"), base=0, author="alice", message="one")
    return store.export()


def _with_bad_ip(document: dict[str, Any]) -> Any:
    document["config"]["virtual_services"][0]["real_servers"][0]["ip"] = "192.168.85.300"
    return document


def _with_two_services_of_one_label(document: dict[str, Any]) -> Any:
    services = document["config"]["virtual_services"]
    services.append({**copy.deepcopy(services[0]), "ip": "192.168.85.101"})
    return document


@pytest.mark.parametrize(
    ("spoil", "field", "reason"),
    [
        (lambda d: [d], "", "JSON object"),
        (lambda d: "<xml/>", "", "JSON object"),
        (lambda d: {**d, "format": "loadbalancer.org-xml"}, "format", "not a Balancer backup"),
        (lambda d: {k: v for k, v in d.items() if k != "format"}, "format", "must be"),
        (lambda d: {**d, "version": 3}, "version", "3 is not supported; supported versions: 1, 2"),
        (lambda d: {k: v for k, v in d.items() if k != "version"}, "version", "is missing"),
        (lambda d: {k: v for k, v in d.items() if k != "config"}, "config", "is missing"),
        (lambda d: {**d, "config": None}, "config", "must be an object of settings"),
        (lambda d: {**d, "users": []}, "users", "is not a known setting"),
        (
            _with_bad_ip,
            "config.virtual_services[CyberArk-PSM].real_servers[PSM1].ip",
            "'192.168.85.300' is not an IPv4 or IPv6 address",
        ),
        (
            _with_two_services_of_one_label,
            "config.virtual_services[CyberArk-PSM].label",
            "'CyberArk-PSM' is used twice",
        ),
    ],
    ids=[
        "list",
        "string",
        "wrong-format",
        "no-format",
        "future-version",
        "no-version",
        "no-config",
        "null-config",
        "unknown-key",
        "bad-ip",
        "duplicate-label",
    ],
)
def test_restore_refuses_a_bad_document_and_writes_nothing(
    store: Store, spoil: Any, field: str, reason: str
) -> None:
    document = spoil(_document(store))
    before = (store.head(), store.audit_log())
    with pytest.raises(Invalid) as raised:
        restore(store, document, base=1, author="mallory")
    assert [p.field for p in raised.value.problems] == [field]
    assert reason in raised.value.problems[0].reason
    assert (store.head(), store.audit_log()) == before


def test_reopening_the_file_sees_everything(path: Path) -> None:
    with Store(path) as store:
        saved = store.save(psm("192.168.85.10"), base=0, author="alice", message="one")
        applied = store.mark_applied(1, author="alice")
        store.save_node_settings(NodeSettings(hostname="lb01"), author="alice")
        log = store.audit_log()
    with Store(path) as store:
        assert store.head() == saved
        assert [r.id for r in store.revisions()] == [1, 0]
        assert store.applied() == applied
        assert store.node_settings().hostname == "lb01"
        assert store.audit_log() == log


def test_the_file_is_private_and_in_wal_mode(path: Path) -> None:
    Store(path).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert db.execute("PRAGMA user_version").fetchone() == (len(MIGRATIONS),)


def test_a_store_from_a_later_release_is_refused(path: Path) -> None:
    Store(path).close()
    with closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(StoreError, match="schema version 99"):
        Store(path)


def test_a_file_that_is_not_a_store_is_refused(path: Path) -> None:
    path.write_bytes(b"this is not SQLite" * 100)
    with pytest.raises(StoreError, match="cannot open the store"):
        Store(path)


def test_threads_share_one_store(store: Store) -> None:
    def change(n: int) -> None:
        while True:
            base = store.head().id
            try:
                store.save(psm(f"10.0.0.{n}"), base=base, author=f"thread{n}", message="")
                return
            except Conflict:
                continue

    threads = [threading.Thread(target=change, args=(n,)) for n in range(1, 9)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert store.head().id == 8
    assert sorted(e.author for e in store.audit_log()) == [f"thread{n}" for n in range(1, 9)]


# Saves revisions as fast as it can and prints each id once save() has returned. Bounded by
# count and time so a kill that misses cannot leave it running.
WRITER = """
import sys, time
from pathlib import Path
from balancer.model import Config
from balancer.store import Store

deadline = time.monotonic() + 5
with Store(Path(sys.argv[1])) as store:
    base = store.head().id
    for n in range(5000):
        if time.monotonic() > deadline:
            break
        services = [
            {"label": f"VIP{v}", "ip": f"10.1.{v}.1", "ports": 1000 + n % 60000,
             "real_servers": [{"label": f"RIP{r}", "ip": f"10.2.{v}.{r}"} for r in range(1, 9)]}
            for v in range(20)
        ]
        config = Config.model_validate({"virtual_services": services})
        base = store.save(config, base=base, author="writer", message=str(n)).id
        print(base, flush=True)
"""


def test_a_killed_writer_loses_no_acknowledged_revision(path: Path) -> None:
    Store(path).close()
    chance = random.Random(5)
    acknowledged: list[int] = []
    for _ in range(5):
        acknowledged += _kill_a_writer(path, lines=chance.randint(1, 30), pause=chance.random())
        assert integrity(path) == [("ok",)]
        with Store(path) as store:
            for id in acknowledged:
                assert store.revision(id).config.virtual_services[0].label == "VIP0"
            head = store.head()
            assert head.id >= max(acknowledged)
            store.save(Config(), base=head.id, author="after", message="still works")


def _kill_a_writer(path: Path, lines: int, pause: float) -> list[int]:
    """Read ``lines`` acknowledged ids, SIGKILL the writer a moment later; all ids it printed."""
    with subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True
    ) as writer:
        assert writer.stdout is not None
        acknowledged = [int(writer.stdout.readline()) for _ in range(lines)]
        time.sleep(pause * 0.01)  # lands somewhere inside a later save
        writer.send_signal(signal.SIGKILL)
        acknowledged += [int(line) for line in writer.stdout]
    assert writer.returncode == -signal.SIGKILL, "the writer finished before it was killed"
    return acknowledged


# --- revisions at scale, digests, old databases, revisions from the owning node ------------


def many(services: int, servers: int, *, weight: int = 1) -> Config:
    """``services`` virtual services of ``servers`` real servers each, one port each."""
    return Config.model_validate(
        {
            "virtual_services": [
                {
                    "label": f"VIP{v}",
                    "ip": f"10.{v // 250}.{v % 250}.1",
                    "ports": "3389",
                    "persistence": {"mode": "source_ip"},
                    "real_servers": [
                        {"label": f"RIP{r}", "ip": f"10.200.{v % 250}.{r + 1}", "weight": weight}
                        for r in range(servers)
                    ],
                }
                for v in range(services)
            ]
        }
    )


def on_disk(path: Path) -> int:
    """Bytes the store takes once its write-ahead log is folded into the file."""
    with closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path.stat().st_size


def test_the_database_grows_with_the_change_not_the_configuration(path: Path) -> None:
    with Store(path) as store:
        config = many(200, 5)
        store.save(config, base=0, author="alice", message="200 services")
        whole = len(config.model_dump_json())
        before = on_disk(path)
        for n in range(300):
            head = store.head()
            edited = modify_real_server(
                head.config, f"VIP{n * 7 % 200}", f"RIP{n % 5}", {"weight": 2 + n % 100}
            )
            store.save(edited, base=head.id, author="alice", message=f"weight {n}")
    grown = on_disk(path) - before
    # Whole documents would add 300 x 100 KiB; one service, a row and an audit entry are
    # under 2 KiB a save.
    assert whole > 100_000
    assert grown < 300 * 8_000, f"300 one-field saves added {grown} bytes"


def test_every_revision_reads_back_as_it_was_saved(path: Path) -> None:
    """Enough saves for several whole manifests, with every kind of edit; read back in a
    fresh store, in random order, exported and rolled back."""
    chance = random.Random(11)
    saved: dict[int, Config] = {}
    with Store(path) as store:
        config = many(30, 3)
        saved[store.save(config, base=0, author="a", message="30").id] = config
        for n in range(260):
            head = store.head()
            labels = [vs.label for vs in head.config.virtual_services]
            pick = chance.choice(labels)
            kind = n % 7
            if kind == 0:
                edited = add_virtual_service(
                    head.config, {"label": f"NEW{n}", "ip": f"10.99.{n % 250}.1", "ports": "80"}
                )
            elif kind == 1 and len(labels) > 5:
                edited = remove_virtual_service(head.config, pick)
            elif kind == 2:
                edited = modify_virtual_service(head.config, pick, {"label": f"R{n}"})
            else:
                vs = head.config.virtual_service(pick)
                assert vs is not None
                if kind == 3 or not vs.real_servers:
                    server = {"label": f"X{n}", "ip": f"10.98.{n % 250}.9"}
                    edited = add_real_server(head.config, pick, server)
                else:
                    first = vs.real_servers[0].label
                    edited = modify_real_server(head.config, pick, first, {"weight": n % 200})
            saved[store.save(edited, base=head.id, author="a", message=str(n)).id] = edited
        # A rollback: an old revision's configuration saved as the head.
        head = store.head()
        saved[store.save(saved[5], base=head.id, author="a", message="back to 5").id] = saved[5]
    with Store(path) as store:
        ids = list(saved)
        chance.shuffle(ids)
        for id in ids:
            revision = store.revision(id)
            assert revision.config == saved[id], f"revision {id}"
            assert revision.digest == digest(saved[id])
        assert store.revision(max(saved)).digest == store.revision(5).digest
        assert store.export(40)["config"] == saved[40].model_dump(mode="json")
        assert [r.id for r in store.revisions(300)] == sorted([*saved, 0], reverse=True)


def test_digest_is_sha256_of_the_canonical_json(store: Store) -> None:
    config = psm("192.168.85.10", "192.168.85.11")
    text = json.dumps(config.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    assert digest(config) == hashlib.sha256(text.encode()).hexdigest()
    three = many(3, 2)
    text = json.dumps(three.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    assert store.save(three, base=0, author="alice", message="3").digest == (
        hashlib.sha256(text.encode()).hexdigest()
    )
    revision = store.save(config, base=1, author="alice", message="two")
    assert revision.digest == digest(config)
    assert store.head().digest == digest(config) != store.revision(0).digest
    # The same content built another way, keys in another order, has the same digest.
    document = config.model_dump(mode="json")
    again = Config.model_validate(
        {"virtual_services": [dict(reversed(vs.items())) for vs in document["virtual_services"]]}
    )
    assert digest(again) == digest(config)
    assert store.save(again, base=2, author="bob", message="same").digest == revision.digest


def test_a_backup_without_a_digest_still_restores(store: Store) -> None:
    config = psm("192.168.85.10")
    document = {
        "format": "balancer-configuration",
        "version": 1,
        "revision": 4,
        "config": config.model_dump(mode="json"),
    }
    assert restore(store, document, base=0, author="alice").config == config


# Schema version 2, as the release before content-addressed revisions left a database: each
# revision holds its whole configuration. Shipped steps are never edited, so they are that schema.
OLD_SCHEMA = [step for step in (*MIGRATIONS[0], *MIGRATIONS[1]) if isinstance(step, str)]
assert len(OLD_SCHEMA) == len(MIGRATIONS[0]) + len(MIGRATIONS[1])  # those two steps are SQL
OLD_SCHEMA.append("PRAGMA user_version = 2")


def test_a_database_of_the_old_schema_opens_with_every_revision(path: Path) -> None:
    configs = [
        Config(),
        psm("192.168.85.10"),
        psm("192.168.85.10", "192.168.85.11"),
        many(20, 3),
        many(20, 3, weight=7),
    ]
    with closing(sqlite3.connect(path)) as db, db:
        for statement in OLD_SCHEMA:
            db.execute(statement)
        for id, config in enumerate(configs):
            db.execute(
                "INSERT INTO revision (id, created, author, message, config)"
                " VALUES (?, ?, ?, ?, ?)",
                (id, 1_700_000_000.0 + id, "alice", f"r{id}", config.model_dump_json()),
            )
        db.execute("INSERT INTO applied (id, revision, at, author) VALUES (1, 3, 1.0, 'bob')")
        db.execute("INSERT INTO user VALUES ('admin', 'hash', 1.0, 1.0)")
        db.execute(
            "INSERT INTO audit (at, author, action, target, detail) "
            "VALUES (1.0, 'bob', 'commit', '', '{\"revision\": 3}')"
        )
    with Store(path) as store:
        for id, config in enumerate(configs):
            revision = store.revision(id)
            assert (revision.config, revision.message) == (config, f"r{id}")
            assert revision.digest == digest(config)
        assert store.head().id == 4
        assert store.applied() == Applied(3, 1.0, "bob")
        assert store.password_hash("admin") == "hash"
        assert store.audit_log()[0].detail == {"revision": 3}
        edited = modify_real_server(configs[4], "VIP3", "RIP1", {"weight": 9})
        assert store.save(edited, base=4, author="carol", message="after").id == 5
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (len(MIGRATIONS),)
        columns = [row[1] for row in db.execute("PRAGMA table_info(revision)")]
        assert "config" not in columns
        # Revisions 1 and 2 hold one service each, 3 and 4 differ in all 20; 5 adds one.
        assert db.execute("SELECT count(*) FROM service").fetchone() == (1 + 1 + 20 + 20 + 1,)
    assert integrity(path) == [("ok",)]


def test_a_revision_from_the_owning_node_keeps_its_number_and_digest(tmp_path: Path) -> None:
    with Store(tmp_path / "primary.db") as primary, Store(tmp_path / "secondary.db") as secondary:
        for n in range(3):
            primary.save(psm(f"192.168.85.{10 + n}"), base=n, author="alice", message=str(n))
        owned = primary.head()
        received = secondary.receive(
            owned.config,
            revision=owned.id,
            digest=owned.digest,
            author="primary",
            message=owned.message,
            created=owned.created,
        )
        assert (received.id, received.digest, received.config) == (3, owned.digest, owned.config)
        assert received.created == owned.created
        assert secondary.head() == received
        assert secondary.export()["digest"] == primary.export()["digest"]
        entry = secondary.audit_log(limit=1)[0]
        assert (entry.author, entry.action, entry.detail["revision"]) == ("primary", "receive", 3)
        # Sent again (the acknowledgement was lost): already here, nothing written.
        again = secondary.receive(owned.config, revision=3, digest=owned.digest, author="primary")
        assert again == received
        assert len(secondary.audit_log()) == 1


def test_a_revision_received_with_the_wrong_digest_is_refused(store: Store) -> None:
    config = psm("192.168.85.10")
    wrong = digest(psm("192.168.85.11"))
    with pytest.raises(Mismatch, match=f"revision 4: .* not {wrong} as sent"):
        store.receive(config, revision=4, digest=wrong, author="primary")
    assert store.head().id == 0
    assert store.audit_log() == []


def test_a_revision_received_that_is_not_newer_is_refused(store: Store) -> None:
    store.save(psm("192.168.85.10"), base=0, author="alice", message="local")
    config = psm("192.168.85.11")
    for number in (0, 1):
        with pytest.raises(Conflict, match=f"revision {number} is not newer than revision 1"):
            store.receive(config, revision=number, digest=digest(config), author="primary")
    assert (store.head().id, len(store.audit_log())) == (1, 1)
    received = store.receive(config, revision=7, digest=digest(config), author="primary")
    assert store.head() == received
    assert store.save(Config(), base=7, author="alice", message="next").id == 8


def test_an_invalid_revision_received_is_refused(store: Store) -> None:
    service = psm("192.168.85.10").virtual_services[0]
    twice = Config(virtual_services=(service, service))
    with pytest.raises(Invalid):
        store.receive(twice, revision=1, digest=digest(twice), author="primary")
    assert store.head().id == 0
