"""The audit trail's hash chain: each entry hashes the one before it, so an entry edited or
removed in the SQLite file, behind the appliance's back, is named by `balancer audit verify`,
GET /api/v1/audit/verify and the Logs page."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest

from balancer.store import MIGRATIONS, Store, audit_chain
from tests.appliance import Appliance, appliance
from tests.webapp import webapp


@contextmanager
def tampering(database: Path) -> Iterator[sqlite3.Connection]:
    """The store's file opened apart from the appliance, as anyone with the file could."""
    with closing(sqlite3.connect(database, isolation_level=None)) as db:
        yield db


def entries(database: Path) -> list[tuple[int, float, str, str, str, str, str]]:
    with tampering(database) as db:
        return db.execute(
            "SELECT id, at, author, action, target, detail, chain FROM audit ORDER BY id"
        ).fetchall()


def expected_chains(rows: list[tuple[int, float, str, str, str, str, str]]) -> list[str]:
    """The chain as the README words it, computed here on its own."""
    previous, made = "0" * 64, []
    for id, at, author, action, target, detail, _ in rows:
        canonical = json.dumps(
            {
                "action": action,
                "at": at,
                "author": author,
                "detail": json.loads(detail),
                "id": id,
                "target": target,
            },
            sort_keys=True,
            separators=(",", ":"),
        )
        previous = hashlib.sha256((previous + canonical).encode()).hexdigest()
        made.append(previous)
    return made


def test_each_entry_hashes_the_one_before_it(tmp_path: Path) -> None:
    with Store(tmp_path / "balancer.db") as store:
        store.audit(
            author="alice", action="drain", target="CyberArk-PSM/PSM1", detail={"z": [1], "é": 1.5}
        )
        store.audit(author="bob", action="online", target="CyberArk-PSM/PSM1")
        verdict = store.verify_audit()
    rows = entries(tmp_path / "balancer.db")
    assert len(rows) == 2
    assert [row[6] for row in rows] == expected_chains(rows)
    assert verdict == audit_chain.Verdict(2, None, rows[-1][6])
    assert verdict.said() == "Audit trail: whole, 2 entries"


def test_the_migration_chains_the_entries_already_there(tmp_path: Path) -> None:
    database = tmp_path / "balancer.db"
    step = next(i for i, s in enumerate(MIGRATIONS) if audit_chain.chain_existing in s)
    with tampering(database) as db:  # a store of the release before the chain
        for statement in (s for earlier in MIGRATIONS[:step] for s in earlier):
            db.execute(statement) if isinstance(statement, str) else statement(db)
        for n in range(3):
            db.execute(
                "INSERT INTO audit (at, author, action, target, detail) VALUES (?, ?, ?, ?, ?)",
                (1000.0 + n, "alice", "add", f"VIP{n}", json.dumps({"revision": n})),
            )
        db.execute(f"PRAGMA user_version = {step}")
    with Store(database) as store:
        store.audit(author="bob", action="commit")
        assert store.verify_audit().said() == "Audit trail: whole, 4 entries"
    rows = entries(database)
    assert [row[6] for row in rows] == expected_chains(rows)


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Appliance]:
    with appliance(tmp_path_factory.mktemp("audit")) as started:
        for n in range(4):
            started.client.post("/virtual-services", vip(n))
        yield started


def vip(n: int) -> dict[str, object]:
    return {"label": f"VIP{n}", "ip": f"192.168.94.{100 + n}", "ports": "3389"}


def verify(running: Appliance) -> tuple[int, str, dict[str, object]]:
    said = running.cli("audit", "verify")
    return said.returncode, said.stdout + said.stderr, running.client.get("/audit/verify")


def test_a_whole_chain_is_said_whole(running: Appliance) -> None:
    code, said, api = verify(running)
    count = len(entries(running.data_dir / "balancer.db"))
    assert code == 0, said
    assert said.splitlines()[0] == f"Audit trail: whole, {count} entries"
    assert api["whole"] is True
    assert api["entries"] == count
    assert api["broken_at"] is None


def test_an_entry_edited_in_the_file_is_named(running: Appliance) -> None:
    database = running.data_dir / "balancer.db"
    id, _, _, _, _, detail, _ = entries(database)[2]
    edited = json.dumps({**json.loads(detail), "message": "nothing to see"})
    with tampering(database) as db:
        db.execute("UPDATE audit SET detail = ? WHERE id = ?", (edited, id))
    try:
        code, said, api = verify(running)
        assert code == 1
        assert said.splitlines()[0] == f"Audit trail: broken at entry {id} (edited or removed)"
        assert api["whole"] is False
        assert api["broken_at"] == id
    finally:
        with tampering(database) as db:
            db.execute("UPDATE audit SET detail = ? WHERE id = ?", (detail, id))
    assert verify(running)[0] == 0


@pytest.mark.parametrize("where", ["middle", "newest"])
def test_an_entry_removed_from_the_file_is_named(running: Appliance, where: str) -> None:
    database = running.data_dir / "balancer.db"
    rows = entries(database)
    removed = rows[len(rows) // 2] if where == "middle" else rows[-1]
    with tampering(database) as db:
        db.execute("DELETE FROM audit WHERE id = ?", (removed[0],))
    try:
        code, said, api = verify(running)
        assert code == 1
        line = f"Audit trail: broken at entry {removed[0]} (edited or removed)"
        assert said.splitlines()[0] == line
        assert api["broken_at"] == removed[0]
    finally:
        with tampering(database) as db:
            db.execute(
                "INSERT INTO audit (id, at, author, action, target, detail, chain) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                removed,
            )
    assert verify(running)[0] == 0


def test_the_logs_page_says_whether_the_trail_is_whole(tmp_path: Path) -> None:
    with webapp(tmp_path) as app:
        app.sign_in()
        page = app.network.get("/lbadmin/logs?source=audit").text
        count = len(entries(app.store.path))
        assert f'class="banner ok">Audit trail: whole, {count} entries.</p>' in page
        with tampering(app.store.path) as db:
            db.execute("UPDATE audit SET author = 'nobody' WHERE id = 1")
        page = app.network.get("/lbadmin/logs?source=audit").text
        assert 'role="alert">Audit trail: broken at entry 1 (edited or removed).</p>' in page
        # The line is the audit trail's: the other logs do not pay for checking it.
        assert "Audit trail: " not in app.network.get("/lbadmin/logs").text
