"""The audit trail's hash chain: each entry carries ``chain``, the SHA-256 (hex) of the entry
before it's chain followed by its own canonical JSON (id, at, author, action, target, detail;
keys sorted, no spaces). The first entry's predecessor is ``GENESIS``.

An entry edited in the SQLite file no longer hashes to its ``chain``; an entry removed leaves a
gap in the ids, which only grow (AUTOINCREMENT, and a transaction rolled back takes its id back
with it), or, if it was the newest, ids short of ``sqlite_sequence``'s. ``verify`` names the first
entry where either is found. What the chain cannot show is a whole trail rewritten from some
entry on, every later hash recomputed: ``Verdict.head`` is there to be noted elsewhere and
compared later.

The store prunes no entry. A pruning must keep verification possible: it must keep, beside the
first kept entry, the chain of the last one it removed, for ``verify`` to start from instead of
``GENESIS`` at that entry's id; without it the first entry missing reads as removed.

Pure functions of a connection, called by the store inside its transactions and by its
migration step, whose code this is: what ``chain`` computes must not change once shipped.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass
from typing import Any

GENESIS = "0" * 64
# One encoder for every entry: json.dumps with options makes a new one at each call.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class Verdict:
    entries: int  # how many entries the trail holds
    broken_at: int | None  # the first entry edited or removed; None when the chain is whole
    head: str  # the newest entry's chain (GENESIS for an empty trail)

    @property
    def whole(self) -> bool:
        return self.broken_at is None

    def said(self) -> str:
        if self.broken_at is None:
            return (
                f"Audit trail: whole, {self.entries} {'entry' if self.entries == 1 else 'entries'}"
            )
        return f"Audit trail: broken at entry {self.broken_at} (edited or removed)"


def chain(
    previous: str, id: int, at: float, author: str, action: str, target: str, detail: Any
) -> str:
    entry = {
        "id": id,
        "at": at,
        "author": author,
        "action": action,
        "target": target,
        "detail": detail,
    }
    canonical = _CANONICAL.encode(entry)
    return hashlib.sha256((previous + canonical).encode()).hexdigest()


def link(db: sqlite3.Connection, id: int) -> None:
    """Set the chain of the entry ``id``, just inserted as the newest."""
    row = db.execute(
        "SELECT chain FROM audit WHERE id < ? ORDER BY id DESC LIMIT 1", (id,)
    ).fetchone()
    at, author, action, target, detail = db.execute(
        "SELECT at, author, action, target, detail FROM audit WHERE id = ?", (id,)
    ).fetchone()
    made = chain(row[0] if row else GENESIS, id, at, author, action, target, json.loads(detail))
    db.execute("UPDATE audit SET chain = ? WHERE id = ?", (made, id))


def chain_existing(db: sqlite3.Connection) -> None:
    """The migration step's: chain the entries already there, oldest first."""
    previous = GENESIS
    rows = db.execute("SELECT id, at, author, action, target, detail FROM audit ORDER BY id")
    for id, at, author, action, target, detail in rows.fetchall():
        previous = chain(previous, id, at, author, action, target, json.loads(detail))
        db.execute("UPDATE audit SET chain = ? WHERE id = ?", (previous, id))


def verify(db: sqlite3.Connection) -> Verdict:
    """Walk the whole trail, oldest first, and say where it first breaks."""
    previous, expected, count = GENESIS, 1, 0
    rows = db.execute("SELECT id, at, author, action, target, detail, chain FROM audit ORDER BY id")
    for id, at, author, action, target, detail, stored in rows:
        count += 1
        if id != expected:
            return Verdict(_count(db), expected, _head(db))
        try:
            made = chain(previous, id, at, author, action, target, json.loads(detail))
        except (ValueError, TypeError):  # detail edited into something that is not JSON text
            made = ""
        if made != stored:
            return Verdict(_count(db), id, _head(db))
        previous, expected = stored, id + 1
    issued = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'audit'").fetchone()
    if issued is not None and issued[0] >= expected:  # the newest entries were removed
        return Verdict(count, expected, previous)
    return Verdict(count, None, previous)


def _count(db: sqlite3.Connection) -> int:
    return int(db.execute("SELECT count(*) FROM audit").fetchone()[0])


def _head(db: sqlite3.Connection) -> str:
    row = db.execute("SELECT chain FROM audit ORDER BY id DESC LIMIT 1").fetchone()
    return str(row[0]) if row else GENESIS
