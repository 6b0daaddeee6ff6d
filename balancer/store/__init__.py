"""The store: revisions of the configuration (saved and applied), node settings, users and
their API keys, the audit log.

One SQLite file in WAL mode with ``synchronous=FULL``: once a write returns it is on disk, so a
crash at any instant loses no acknowledged revision. Every write is one transaction. Revisions
are never changed: a change, a restore or a rollback is a new revision on top of the head.

A revision costs what it changes: each virtual service is stored once, and a revision is a
splice of its parent's list of services (``balancer.store.revisions``).

A revision is named on every node by its number, allocated by the node that owns the
configuration, and by its digest, the SHA-256 of the configuration's canonical JSON
(``digest``), which is carried with it (``export``, ``receive``).

What an HA pair replicates and what each node keeps to itself (the guide's 14.1.1):
- cluster-wide: ``revision`` and ``service`` (the configuration and its history), ``user`` and
  ``api_key``;
- node-local: ``node_settings`` (hostname, addresses, ports), ``applied`` (what this node's
  data plane runs), ``audit`` (what was done on this node) and ``alert_channel`` (where this
  node sends its alerts).

On a Secondary, what is replicated is the Primary's: users and API keys are changed there only
by ``receive_users`` (``ReadOnly`` otherwise, ``read_only`` says why), and the configuration
only by ``receive`` (the controller refuses the rest).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

from balancer import validate
from balancer.configuration import Missing
from balancer.ha.sync import (
    KeyRecord,
    Mark,
    RecoveryUsed,
    Scope,
    SecondFactorsUsed,
    StepUsed,
    UserRecord,
    Users,
    peer_at,
    refuse_edit,
    role_of,
)
from balancer.model import Config, NodeSettings
from balancer.roles import Role, narrower
from balancer.store import audit_chain
from balancer.store.errors import Conflict, Mismatch, NotFound, ReadOnly, StoreError
from balancer.store.revisions import Content, History, Revision, digest, split_revisions
from balancer.validate import Invalid, Problem

__all__ = [
    "ApiKey",
    "Applied",
    "AuditEntry",
    "Conflict",
    "Mismatch",
    "NotFound",
    "ReadOnly",
    "Revision",
    "Store",
    "StoreError",
    "TwoFactor",
    "User",
    "digest",
    "parse_backup",
]

BACKUP_FORMAT = "balancer-configuration"
# 2: the document carries its revision's digest.
BACKUP_VERSION = 2
BACKUP_VERSIONS_READ = (1, 2)
_BACKUP_KEYS = frozenset({"format", "version", "exported", "revision", "digest", "config"})

Step = str | Callable[[sqlite3.Connection], None]

# The audited actions that change users or API keys: the newest one's id numbers the users'
# snapshot (``Store.users_version``), as AUTOINCREMENT ids only grow and are kept on disk.
USER_ACTIONS = (
    "add_user",
    "password",
    "remove_user",
    "add_api_key",
    "revoke_api_key",
    "receive_users",
    "role",
    "two_factor_enrol",
    "two_factor_off",
    "two_factor_reset",
    "two_factor_recovery",
)
_USER_ACTIONS_SQL = f"action IN ({', '.join('?' * len(USER_ACTIONS))})"

# Step n takes the schema from version n to n + 1; PRAGMA user_version counts the steps run.
# Append steps; never edit one that has shipped, since databases in the field already ran it.
MIGRATIONS: tuple[tuple[Step, ...], ...] = (
    (
        """CREATE TABLE revision (id INTEGER PRIMARY KEY, created REAL NOT NULL,
            author TEXT NOT NULL, message TEXT NOT NULL, config TEXT NOT NULL)""",
        # One row: the revision the data plane runs.
        """CREATE TABLE applied (id INTEGER PRIMARY KEY CHECK (id = 1),
            revision INTEGER NOT NULL REFERENCES revision (id),
            at REAL NOT NULL, author TEXT NOT NULL)""",
        # AUTOINCREMENT so that an entry id is never reused, even once old entries are pruned.
        """CREATE TABLE audit (id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL,
            author TEXT NOT NULL, action TEXT NOT NULL, target TEXT NOT NULL,
            detail TEXT NOT NULL)""",
        "CREATE INDEX audit_by_author ON audit (author, id)",
        "CREATE INDEX audit_by_action ON audit (action, id)",
        """CREATE TABLE node_settings (id INTEGER PRIMARY KEY CHECK (id = 1),
            settings TEXT NOT NULL)""",
    ),
    (
        # hash: argon2id, in the PHC string format that carries its own parameters and salt.
        """CREATE TABLE user (name TEXT PRIMARY KEY, hash TEXT NOT NULL,
            created REAL NOT NULL, changed REAL NOT NULL)""",
        # digest: SHA-256 of the key, which is random enough that a slow hash adds nothing.
        # A revoked key keeps its row, so the audit trail can still say whose it was; no
        # foreign key, since a removed user's keys are kept, revoked, for the same reason.
        """CREATE TABLE api_key (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL,
            owner TEXT NOT NULL, digest TEXT NOT NULL UNIQUE, created REAL NOT NULL,
            revoked REAL)""",
    ),
    (
        # One row per distinct virtual service ever saved: its canonical JSON and the SHA-256
        # of that JSON, by which a save finds a service that is already stored.
        """CREATE TABLE service (id INTEGER PRIMARY KEY, digest TEXT NOT NULL UNIQUE,
            document TEXT NOT NULL)""",
        # digest: SHA-256 of the configuration's canonical JSON. settings: the configuration
        # apart from its virtual services, canonical JSON. services: with depth 0, the JSON
        # list of the revision's service ids; with depth n, [start, end, [ids]]: the previous
        # revision's list with [start:end] replaced by ids, n splices from a whole list.
        "ALTER TABLE revision ADD COLUMN digest TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE revision ADD COLUMN settings TEXT NOT NULL DEFAULT '{}'",
        "ALTER TABLE revision ADD COLUMN services TEXT NOT NULL DEFAULT '[]'",
        "ALTER TABLE revision ADD COLUMN depth INTEGER NOT NULL DEFAULT 0",
        # Its code is part of this step: what it writes must not change once shipped.
        split_revisions,
        "ALTER TABLE revision DROP COLUMN config",
    ),
    (
        # Node-local: each node of an HA pair alerts on what it sees, through its own channels.
        # settings: the channel's JSON without its secret, which is kept apart so that nothing
        # that shows or audits the settings can carry it.
        """CREATE TABLE alert_channel (name TEXT PRIMARY KEY, settings TEXT NOT NULL,
            secret TEXT NOT NULL DEFAULT '')""",
    ),
    (
        # Tamper-evident audit trail (balancer.store.audit_chain): each entry's chain hashes the
        # one before it; the entries already there are chained in id order.
        "ALTER TABLE audit ADD COLUMN chain TEXT NOT NULL DEFAULT ''",
        audit_chain.chain_existing,
    ),
    (
        # Roles (balancer.roles): every user there was may do everything, as before roles.
        # A key's NULL role is its owner's, whatever that becomes.
        "ALTER TABLE user ADD COLUMN role TEXT NOT NULL DEFAULT 'administrator'",
        "ALTER TABLE api_key ADD COLUMN role TEXT",
    ),
    (
        # Two-factor sign-in (balancer.totp), replicated with the user: totp, the TOTP secret
        # in base32 ('' for none), never shown back nor audited; recovery, the JSON list of the
        # SHA-256 digests of the recovery codes not used yet.
        "ALTER TABLE user ADD COLUMN totp TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE user ADD COLUMN recovery TEXT NOT NULL DEFAULT '[]'",
        # Node-local: the newest 30-second step whose code signed each user in here; no code of
        # that step or before is taken again (replay). Apart from user, which a Secondary
        # replaces with each snapshot of the Primary's.
        "CREATE TABLE totp_used (name TEXT PRIMARY KEY, step INTEGER NOT NULL)",
        # Node-local: the roles whose users must have a second factor, one row each.
        "CREATE TABLE two_factor_required (role TEXT PRIMARY KEY)",
    ),
    (
        # Node-local directory sign-in (balancer.directory), one row: settings, the JSON without
        # the secret (the search account's password, or RADIUS's shared secret), which is kept
        # apart so that nothing that shows or audits the settings can carry it.
        """CREATE TABLE directory (id INTEGER PRIMARY KEY CHECK (id = 1),
            settings TEXT NOT NULL, secret TEXT NOT NULL DEFAULT '')""",
    ),
    (
        # Node-local: the recovery codes used on a Secondary, which may not change the users
        # it keeps for the Primary. They count as used here at once and are told to the
        # Primary (balancer.pair.two_factor); a row goes once the Primary's users no longer
        # list its digest.
        """CREATE TABLE recovery_used (name TEXT NOT NULL, digest TEXT NOT NULL,
            PRIMARY KEY (name, digest))""",
    ),
)


@dataclass(frozen=True, slots=True)
class Applied:
    revision: int
    at: float
    author: str


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    at: float
    author: str
    action: str
    target: str
    detail: dict[str, Any]


@dataclass(frozen=True, slots=True)
class User:
    name: str
    created: float
    changed: float  # when the password was last set
    role: Role


@dataclass(frozen=True, slots=True)
class TwoFactor:
    secret: str  # base32: what the user's authenticator app holds
    recovery: tuple[str, ...]  # SHA-256 digests of the recovery codes not used yet


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: int
    name: str
    owner: str
    created: float
    revoked: float | None
    role: Role | None  # None: its owner's, whatever that is when the key is used


class Store:
    """One SQLite connection, shared by threads one at a time."""

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._clock = clock
        self._lock = threading.Lock()
        self._history = History()  # used under _lock
        self._db = _connect(path)
        try:
            _configure(self._db, path)
            self._migrate()
        except sqlite3.DatabaseError as error:
            self._db.close()
            raise StoreError(f"cannot open the store {path}: {error}") from error
        except BaseException:
            self._db.close()
            raise

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def head(self) -> Revision:
        with self._lock:
            (id,) = self._db.execute("SELECT max(id) FROM revision").fetchone()
            return self._history.load(self._db, id).revision

    def revision(self, id: int) -> Revision:
        with self._lock:
            return self._history.load(self._db, id).revision

    def revisions(self, limit: int = 50) -> list[Revision]:
        """Newest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id FROM revision ORDER BY id DESC LIMIT ?", (limit,)
            ).fetchall()
            # Oldest first, so that each is a splice of one just read.
            return [self._history.load(self._db, id).revision for (id,) in reversed(rows)][::-1]

    def save(
        self,
        config: Config,
        *,
        base: int,
        author: str,
        message: str,
        action: str = "change",
        target: str = "",
    ) -> Revision:
        """Save ``config`` as the new head, if ``base`` is still the head; audited.

        The services ``config`` shares with a revision read or saved here (an edit of the head
        keeps every service it does not touch) are neither checked on their own again nor
        serialised again."""
        content = self._checked(config)
        with self._transaction() as db:
            (head,) = db.execute("SELECT max(id) FROM revision").fetchone()
            if base != head:
                raise Conflict(
                    f"revision {base} is no longer the newest: revision {head} was saved since"
                )
            stored = self._history.insert(db, head + 1, self._clock(), author, message, content)
            detail = {"revision": head + 1, "message": message}
            _insert_audit(db, stored.revision.created, author, action, target, detail)
        with self._lock:
            self._history.remember(stored, content)
        return stored.revision

    def receive(
        self,
        config: Config,
        *,
        revision: int,
        digest: str,
        author: str,
        message: str = "",
        created: float | None = None,
    ) -> Revision:
        """Record a revision made by the node that owns the configuration, under the owner's
        number and digest: an HA pair's Secondary keeps the Primary's revisions so. Refused with
        Mismatch if ``config`` does not have ``digest``, and with Conflict if ``revision`` is not
        newer than the head; the same revision received again is already here and is returned.
        Audited as ``receive``."""
        content = self._checked(config)
        if content.digest != digest:
            raise Mismatch(
                f"revision {revision}: the configuration received has digest "
                f"{content.digest}, not {digest} as sent"
            )
        with self._transaction() as db:
            (head,) = db.execute("SELECT max(id) FROM revision").fetchone()
            if revision <= head:
                same = db.execute(
                    "SELECT 1 FROM revision WHERE id = ? AND digest = ?", (revision, digest)
                ).fetchone()
                if same is None:
                    raise Conflict(
                        f"revision {revision} is not newer than revision {head}, the newest here"
                    )
                return self._history.load(db, revision).revision
            at = self._clock()
            stored = self._history.insert(
                db, revision, at if created is None else created, author, message, content
            )
            detail = {"revision": revision, "digest": digest, "message": message}
            _insert_audit(db, at, author, "receive", "", detail)
        with self._lock:
            self._history.remember(stored, content)
        return stored.revision

    def applied(self) -> Applied | None:
        """The revision the data plane runs; head differs while changes are saved, not committed."""
        rows = self._query("SELECT revision, at, author FROM applied", ())
        return Applied(*rows[0]) if rows else None

    def mark_applied(self, revision: int, *, author: str) -> Applied:
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM revision WHERE id = ?", (revision,)).fetchone() is None:
                raise NotFound(f"there is no revision {revision}")
            applied = Applied(revision, self._clock(), author)
            db.execute(
                "INSERT OR REPLACE INTO applied (id, revision, at, author) VALUES (1, ?, ?, ?)",
                (applied.revision, applied.at, applied.author),
            )
            _insert_audit(db, applied.at, author, "commit", "", {"revision": revision})
        return applied

    def audit(
        self, *, author: str, action: str, target: str = "", detail: dict[str, Any] | None = None
    ) -> None:
        with self._transaction() as db:
            _insert_audit(db, self._clock(), author, action, target, detail or {})

    def audit_log(
        self, limit: int = 100, *, author: str | None = None, action: str | None = None
    ) -> list[AuditEntry]:
        """Newest first, optionally only one author's or one action's entries."""
        wanted = {k: v for k, v in {"author": author, "action": action}.items() if v is not None}
        where = " AND ".join(f"{column} = ?" for column in wanted)
        rows = self._query(
            "SELECT id, at, author, action, target, detail FROM audit"
            + (f" WHERE {where}" if where else "")
            + " ORDER BY id DESC LIMIT ?",
            (*wanted.values(), limit),
        )
        return [_audit_entry(row) for row in rows]

    def verify_audit(self) -> audit_chain.Verdict:
        """Whether the audit trail's hash chain is whole, and if not, its first entry edited or
        removed (``balancer.store.audit_chain``). Read on a connection of its own, in one
        read transaction: every entry is hashed (about 2 s for 100,000), and the store's other
        readers and writers must not wait for that."""
        try:
            with contextlib.closing(sqlite3.connect(self.path, isolation_level=None)) as db:
                db.execute("BEGIN")
                return audit_chain.verify(db)
        except sqlite3.Error as error:
            raise StoreError(f"cannot read the audit trail in {self.path}: {error}") from error

    def node_settings(self) -> NodeSettings:
        rows = self._query("SELECT settings FROM node_settings", ())
        return NodeSettings.model_validate_json(rows[0][0]) if rows else NodeSettings()

    def save_node_settings(self, settings: NodeSettings, *, author: str) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO node_settings (id, settings) VALUES (1, ?)",
                (settings.model_dump_json(),),
            )
            detail = {"settings": settings.model_dump(mode="json")}
            _insert_audit(db, self._clock(), author, "node_settings", "", detail)

    def alert_channels(self) -> list[tuple[str, dict[str, Any], str]]:
        """Each alert channel's name, settings and secret ('' for none), by name."""
        rows = self._query("SELECT name, settings, secret FROM alert_channel ORDER BY name", ())
        return [(name, json.loads(settings), secret) for name, settings, secret in rows]

    def save_alert_channel(
        self, name: str, settings: dict[str, Any], secret: str | None, *, author: str
    ) -> None:
        """Add or change a channel; a ``secret`` of None keeps the one saved. Audited without
        the secret."""
        with self._transaction() as db:
            db.execute(
                """INSERT INTO alert_channel (name, settings, secret) VALUES (?, ?, ?)
                ON CONFLICT (name) DO UPDATE SET settings = excluded.settings,
                secret = coalesce(?, secret)""",
                (name, json.dumps(settings), secret or "", secret),
            )
            _insert_audit(db, self._clock(), author, "alert_channel", name, settings)

    def remove_alert_channel(self, name: str, *, author: str) -> None:
        with self._transaction() as db:
            if db.execute("DELETE FROM alert_channel WHERE name = ?", (name,)).rowcount == 0:
                raise NotFound(f"no alert channel named {name}")
            _insert_audit(db, self._clock(), author, "remove_alert_channel", name, {})

    def directory(self) -> tuple[dict[str, Any], str] | None:
        """Directory sign-in's settings and secret ('' for none); None when not set up."""
        rows = self._query("SELECT settings, secret FROM directory", ())
        return (json.loads(rows[0][0]), rows[0][1]) if rows else None

    def save_directory(
        self, settings: dict[str, Any] | None, secret: str | None, *, author: str
    ) -> None:
        """Set directory sign-in up, or (``settings`` None) turn it off; a ``secret`` of None
        keeps the one saved. Audited without the secret."""
        with self._transaction() as db:
            if settings is None:
                db.execute("DELETE FROM directory")
            else:
                db.execute(
                    """INSERT INTO directory (id, settings, secret) VALUES (1, ?, ?)
                    ON CONFLICT (id) DO UPDATE SET settings = excluded.settings,
                    secret = coalesce(?, secret)""",
                    (json.dumps(settings), secret or "", secret),
                )
            _insert_audit(db, self._clock(), author, "directory", "", settings or {})

    def read_only(self) -> str | None:
        """Why an edit of what an HA pair shares is refused on this node: on a Secondary,
        ``ha.sync.refuse_edit``'s line naming the Primary; None on any other node."""
        pair = self.node_settings().pair
        return None if pair is None else refuse_edit(role_of(pair), Scope.CLUSTER, peer_at(pair))

    def _writable(self) -> None:
        refused = self.read_only()
        if refused is not None:
            raise ReadOnly(refused)

    def users(self) -> list[User]:
        rows = self._query("SELECT name, created, changed, role FROM user ORDER BY name", ())
        return [User(name, created, changed, Role(role)) for name, created, changed, role in rows]

    def password_hash(self, name: str) -> str | None:
        rows = self._query("SELECT hash FROM user WHERE name = ?", (name,))
        return str(rows[0][0]) if rows else None

    def role(self, name: str) -> Role | None:
        """The user's role; None if there is no such user (here: a directory's users are not)."""
        rows = self._query("SELECT role FROM user WHERE name = ?", (name,))
        return Role(rows[0][0]) if rows else None

    def add_user(
        self, name: str, hash: str, role: Role = Role.ADMINISTRATOR, *, author: str
    ) -> User:
        self._writable()
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM user WHERE name = ?", (name,)).fetchone():
                raise Invalid([Problem("name", f"there is already a user {name!r}")])
            now = self._clock()
            db.execute(
                "INSERT INTO user (name, hash, created, changed, role) VALUES (?, ?, ?, ?, ?)",
                (name, hash, now, now, role),
            )
            _insert_audit(db, now, author, "add_user", name, {"role": role})
        return User(name, now, now, role)

    def set_role(self, name: str, role: Role, *, author: str) -> None:
        """Change a user's role; it takes effect at their next request, and their keys' with it.
        The last administrator stays one, or nobody could manage users again."""
        self._writable()
        with self._transaction() as db:
            row = db.execute("SELECT role FROM user WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise Missing("name", f"there is no user {name!r}")
            if row[0] == Role.ADMINISTRATOR and role != Role.ADMINISTRATOR:
                _keep_an_administrator(db, name, "would no longer be one")
            db.execute("UPDATE user SET role = ? WHERE name = ?", (role, name))
            _insert_audit(db, self._clock(), author, "role", name, {"role": role})

    def set_password(self, name: str, hash: str, *, author: str) -> None:
        self._writable()
        with self._transaction() as db:
            now = self._clock()
            if not db.execute(
                "UPDATE user SET hash = ?, changed = ? WHERE name = ?", (hash, now, name)
            ).rowcount:
                raise Missing("name", f"there is no user {name!r}")
            _insert_audit(db, now, author, "password", name, {})

    def remove_user(self, name: str, *, author: str) -> None:
        """Remove a user and revoke their API keys; the last user stays, or nobody could sign in."""
        self._writable()
        with self._transaction() as db:
            (count,) = db.execute("SELECT count(*) FROM user").fetchone()
            row = db.execute("SELECT role FROM user WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise Missing("name", f"there is no user {name!r}")
            if count == 1:
                raise Invalid([Problem("name", f"{name!r} is the last user: nobody could sign in")])
            if row[0] == Role.ADMINISTRATOR:
                _keep_an_administrator(db, name, "would be removed")
            now = self._clock()
            db.execute("DELETE FROM user WHERE name = ?", (name,))
            revoked = db.execute(
                "UPDATE api_key SET revoked = ? WHERE owner = ? AND revoked IS NULL", (now, name)
            ).rowcount
            _insert_audit(db, now, author, "remove_user", name, {"keys_revoked": revoked})

    def add_api_key(
        self, name: str, owner: str, digest: str, role: Role | None = None, *, author: str
    ) -> ApiKey:
        """A key acting as ``owner``, with ``role`` (None: the owner's), never a wider one."""
        self._writable()
        with self._transaction() as db:
            row = db.execute("SELECT role FROM user WHERE name = ?", (owner,)).fetchone()
            if row is None:
                raise Invalid([Problem("owner", f"there is no user {owner!r}")])
            if role is not None and role > Role(row[0]):
                reason = f"{role} is wider than {owner}'s own role, {row[0]}"
                raise Invalid([Problem("role", reason)])
            now = self._clock()
            cursor = db.execute(
                "INSERT INTO api_key (name, owner, digest, created, role) VALUES (?, ?, ?, ?, ?)",
                (name, owner, digest, now, role),
            )
            key = ApiKey(_rowid(cursor), name, owner, now, None, role)
            detail = {"id": key.id, "name": name, "role": role}
            _insert_audit(db, now, author, "add_api_key", owner, detail)
        return key

    def api_keys(self) -> list[ApiKey]:
        rows = self._query(
            "SELECT id, name, owner, created, revoked, role FROM api_key ORDER BY id", ()
        )
        return [_api_key(row) for row in rows]

    def api_key_caller(self, digest: str) -> tuple[str, Role] | None:
        """Whose key this is and the role it acts with (the narrower of its own and its owner's
        now), if it is not revoked (nor its owner removed)."""
        rows = self._query(
            """SELECT api_key.owner, user.role, api_key.role FROM api_key
            JOIN user ON user.name = api_key.owner
            WHERE api_key.digest = ? AND api_key.revoked IS NULL""",
            (digest,),
        )
        if not rows:
            return None
        owner, owner_role, key_role = rows[0]
        return str(owner), narrower(Role(owner_role), None if key_role is None else Role(key_role))

    def revoke_api_key(self, id: int, *, author: str) -> ApiKey:
        """Revoke a key at once; revoking it again changes nothing."""
        self._writable()
        with self._transaction() as db:
            row = db.execute(
                "SELECT id, name, owner, created, revoked, role FROM api_key WHERE id = ?", (id,)
            ).fetchone()
            if row is None:
                raise Missing("id", f"there is no API key {id}")
            key = _api_key(row)
            if key.revoked is None:
                now = self._clock()
                key = replace(key, revoked=now)
                db.execute("UPDATE api_key SET revoked = ? WHERE id = ?", (now, id))
                detail = {"id": id, "name": key.name}
                _insert_audit(db, now, author, "revoke_api_key", key.owner, detail)
        return key

    def now(self) -> float:
        """This node's wall clock, by which entries are stamped and TOTP codes judged."""
        return self._clock()

    def two_factor(self, name: str) -> TwoFactor | None:
        """The user's second factor; None if they have none (or there is no such user). Its
        recovery codes are those not used yet, here or (as far as this node knows) on the
        Primary."""
        with self._lock:
            return _two_factor(self._db, name)

    def set_two_factor(
        self, name: str, found: TwoFactor | None, *, author: str, action: str
    ) -> None:
        """Give the user ``found`` (None: no second factor); audited as ``action``, without
        the secret."""
        self._writable()
        secret, recovery = (found.secret, list(found.recovery)) if found else ("", [])
        with self._transaction() as db:
            if not db.execute(
                "UPDATE user SET totp = ?, recovery = ? WHERE name = ?",
                (secret, json.dumps(recovery), name),
            ).rowcount:
                raise Missing("name", f"there is no user {name!r}")
            db.execute("DELETE FROM totp_used WHERE name = ?", (name,))
            db.execute("DELETE FROM recovery_used WHERE name = ?", (name,))
            _insert_audit(db, self._clock(), author, action, name, {})

    def use_totp_step(self, name: str, step: int) -> bool:
        """Record that a code of ``step`` signed ``name`` in; False, recording nothing, if one
        of this step or a later one already did (a replay)."""
        with self._transaction() as db:
            return bool(
                db.execute(
                    """INSERT INTO totp_used (name, step) VALUES (?, ?)
                    ON CONFLICT (name) DO UPDATE SET step = excluded.step
                    WHERE step < excluded.step""",
                    (name, step),
                ).rowcount
            )

    def use_recovery_code(self, name: str, digest: str, *, on_peer: bool = False) -> bool:
        """Use up the user's recovery code of ``digest``; False if they have none such (left).
        A Secondary, which keeps the Primary's users as they are, notes it as used here until
        the Primary's users no longer list it. ``on_peer``: the Secondary used it, and told
        this node (the audit says so)."""
        read_only = self.read_only() is not None
        with self._transaction() as db:
            found = _two_factor(db, name)
            if found is None or digest not in found.recovery:
                return False
            left = [d for d in found.recovery if d != digest]
            detail: dict[str, Any] = {"left": len(left)}
            if read_only:
                db.execute("INSERT INTO recovery_used (name, digest) VALUES (?, ?)", (name, digest))
                # Not a change of the users (USER_ACTIONS): they stay the Primary's copy.
                action = "two_factor_recovery_on_secondary"
            else:
                db.execute("UPDATE user SET recovery = ? WHERE name = ?", (json.dumps(left), name))
                db.execute("DELETE FROM recovery_used WHERE name = ?", (name,))
                action = "two_factor_recovery"
                if on_peer:
                    detail["used_on"] = "the Secondary"
            _insert_audit(db, self._clock(), name, action, name, detail)
            return True

    def second_factors_used(self, since_step: int) -> SecondFactorsUsed:
        """What the other node of a pair must refuse: the TOTP steps from ``since_step`` on,
        and the recovery codes used here that the users still list."""
        steps = self._query(
            "SELECT name, step FROM totp_used WHERE step >= ? ORDER BY name", (since_step,)
        )
        recovery = self._query("SELECT name, digest FROM recovery_used ORDER BY name, digest", ())
        return SecondFactorsUsed(
            tuple(StepUsed(name, step) for name, step in steps),
            tuple(RecoveryUsed(name, digest) for name, digest in recovery),
        )

    def learn_second_factors(self, told: SecondFactorsUsed) -> int:
        """Take what the other node of a pair used (``second_factors_used``): a step newer than
        this node's for the user, and, where the users may be changed here (the Primary), each
        recovery code, used up. How many of them were new here."""
        new = sum(self.use_totp_step(step.user, step.step) for step in told.steps)
        if self.read_only() is None:
            for code in told.recovery:
                new += self.use_recovery_code(code.user, code.digest, on_peer=True)
        return new

    def two_factor_required(self) -> frozenset[Role]:
        rows = self._query("SELECT role FROM two_factor_required", ())
        return frozenset(Role(role) for (role,) in rows)

    def set_two_factor_required(self, roles: frozenset[Role], *, author: str) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM two_factor_required")
            db.executemany(
                "INSERT INTO two_factor_required (role) VALUES (?)", [(r,) for r in roles]
            )
            detail = {"required": sorted(roles)}
            _insert_audit(db, self._clock(), author, "two_factor_required", "", detail)

    def users_version(self) -> int:
        """A number that grows with every change of users or API keys on this node, kept across
        restarts: the id of the newest audit entry of such a change; 0 when there was none."""
        with self._lock:
            return _users_version(self._db)

    def users_snapshot(self) -> Users:
        """Every user with its password hash and every API key with its digest, as the Primary
        sends them to its Secondary, numbered by ``users_version``."""
        with self._transaction() as db:
            version = _users_version(db)
            user_rows = db.execute(
                "SELECT name, hash, created, changed, role, totp, recovery FROM user ORDER BY name"
            )
            found = tuple(
                UserRecord(
                    name, hash, created, changed, Role(role), totp, tuple(json.loads(recovery))
                )
                for name, hash, created, changed, role, totp, recovery in user_rows
            )
            key_rows = db.execute(
                "SELECT id, name, owner, digest, created, revoked, role FROM api_key ORDER BY id"
            )
            keys = tuple(
                KeyRecord(id, name, owner, digest, created, revoked, role and Role(role))
                for id, name, owner, digest, created, revoked, role in key_rows
            )
        return Users(version, found, keys)

    def receive_users(self, snapshot: Users, *, author: str) -> None:
        """Replace every user and API key here with ``snapshot``, the Primary's, in one
        transaction: an HA pair's Secondary keeps the Primary's so. Key ids are kept, so that a
        key is named alike on both nodes. A snapshot without users is refused (nobody could sign
        in). Audited as ``receive_users``, with the snapshot's mark (``received_users``)."""
        if not snapshot.users:
            raise Invalid([Problem("users", "the snapshot has no user: nobody could sign in")])
        with self._transaction() as db:
            db.execute("DELETE FROM user")
            db.execute("DELETE FROM api_key")
            db.executemany(
                "INSERT INTO user (name, hash, created, changed, role, totp, recovery) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (u.name, u.hash, u.created, u.changed, u.role, u.totp, json.dumps(u.recovery))
                    for u in snapshot.users
                ],
            )
            db.executemany(
                "INSERT INTO api_key (id, name, owner, digest, created, revoked, role) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (k.id, k.name, k.owner, k.digest, k.created, k.revoked, k.role)
                    for k in snapshot.keys
                ],
            )
            detail = {
                "version": snapshot.version,
                "digest": snapshot.digest,
                "users": len(snapshot.users),
                "keys": len(snapshot.keys),
            }
            # The recovery codes used here that the Primary has used up too are its to count.
            db.execute(
                """DELETE FROM recovery_used WHERE NOT EXISTS (
                    SELECT 1 FROM user, json_each(user.recovery)
                    WHERE user.name = recovery_used.name AND json_each.value = recovery_used.digest
                )"""
            )
            _insert_audit(db, self._clock(), author, "receive_users", "", detail)

    def received_users(self) -> Mark | None:
        """The Primary's mark of the users' snapshot held here, as ``Heads`` names it; None if
        none was received, or users or keys were changed here since."""
        rows = self._query(
            f"SELECT action, detail FROM audit WHERE {_USER_ACTIONS_SQL} ORDER BY id DESC LIMIT 1",
            USER_ACTIONS,
        )
        if not rows or rows[0][0] != "receive_users":
            return None
        detail = json.loads(rows[0][1])
        return Mark(detail["version"], detail["digest"])

    def export(self, revision: int | None = None) -> dict[str, Any]:
        """A backup document of the head, or of ``revision``. Node settings are not in it."""
        chosen = self.head() if revision is None else self.revision(revision)
        return {
            "format": BACKUP_FORMAT,
            "version": BACKUP_VERSION,
            "exported": datetime.fromtimestamp(self._clock(), UTC).isoformat(timespec="seconds"),
            "revision": chosen.id,
            "digest": chosen.digest,
            "config": chosen.config.model_dump(mode="json"),
        }

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        # IMMEDIATE takes the write lock at BEGIN, so what is read inside (is base still the
        # head?) cannot change before COMMIT, not even by another process on the same file.
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    def _query(self, sql: str, parameters: tuple[Any, ...]) -> list[Any]:
        with self._lock:
            return self._db.execute(sql, parameters).fetchall()

    def _checked(self, config: Config) -> Content:
        """``config`` checked and taken apart as it is stored."""
        with self._lock:
            known = self._history.known()
        validate.checked(config, known=known)
        with self._lock:
            return self._history.content(config)

    def _migrate(self) -> None:
        with self._transaction() as db:
            (done,) = db.execute("PRAGMA user_version").fetchone()
            if done > len(MIGRATIONS):
                raise StoreError(
                    f"{self.path} has schema version {done}, newer than this Balancer's "
                    f"{len(MIGRATIONS)}: it was written by a later release"
                )
            for step in MIGRATIONS[done:]:
                for statement in step:
                    if isinstance(statement, str):
                        db.execute(statement)
                    else:
                        statement(db)
            if done < len(MIGRATIONS):
                db.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")
            if db.execute("SELECT 1 FROM revision LIMIT 1").fetchone() is None:
                content = Content.of(Config(), (), ())
                self._history.insert(db, 0, self._clock(), "system", "empty configuration", content)


def parse_backup(document: Any) -> Config:
    """The checked configuration of a backup document made by ``Store.export``, or Invalid."""
    if not isinstance(document, dict):
        raise Invalid([Problem("", "a backup must be a JSON object, as export writes it")])
    found = _envelope_problems(document)
    if found:
        raise Invalid(found)
    try:
        return validate.parse(document["config"])
    except Invalid as error:
        raise Invalid([_in_config(problem) for problem in error.problems]) from None


def _in_config(problem: Problem) -> Problem:
    """The same problem, its field named from the top of the backup document."""
    return Problem(".".join(f for f in ("config", problem.field) if f), problem.reason)


def _envelope_problems(document: dict[Any, Any]) -> list[Problem]:
    found: list[Problem] = []
    if document.get("format") != BACKUP_FORMAT:
        found.append(Problem("format", f"must be {BACKUP_FORMAT!r}: this is not a Balancer backup"))
    readable = ", ".join(str(v) for v in BACKUP_VERSIONS_READ)
    version = document.get("version")
    if version is None:
        found.append(Problem("version", f"is missing; supported versions: {readable}"))
    elif type(version) is not int or version not in BACKUP_VERSIONS_READ:
        found.append(
            Problem("version", f"{version!r} is not supported; supported versions: {readable}")
        )
    if "config" not in document:
        found.append(Problem("config", "is missing: a backup holds the configuration there"))
    unknown = sorted(str(key) for key in document.keys() - _BACKUP_KEYS)
    found += [Problem(key, "is not a known setting") for key in unknown]
    return found


def _connect(path: Path) -> sqlite3.Connection:
    try:
        # Created 0600 before SQLite opens it: SQLite gives its -wal and -shm files the same
        # mode, and the store will hold password hashes.
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        # isolation_level=None: no implicit transactions; _transaction says where each begins.
        return sqlite3.connect(path, timeout=10.0, isolation_level=None, check_same_thread=False)
    except (OSError, sqlite3.Error) as error:
        raise StoreError(f"cannot open the store {path}: {error}") from error


def _configure(db: sqlite3.Connection, path: Path) -> None:
    (mode,) = db.execute("PRAGMA journal_mode = WAL").fetchone()
    if mode != "wal":
        raise StoreError(f"{path}: SQLite would not use WAL mode (it chose {mode!r})")
    # FULL syncs the WAL at every commit: a revision that was acknowledged survives power loss.
    db.execute("PRAGMA synchronous = FULL")
    db.execute("PRAGMA foreign_keys = ON")


def _audit_entry(row: tuple[Any, ...]) -> AuditEntry:
    id, at, author, action, target, detail = row
    return AuditEntry(id, at, author, action, target, json.loads(detail))


def _users_version(db: sqlite3.Connection) -> int:
    (version,) = db.execute(
        f"SELECT coalesce(max(id), 0) FROM audit WHERE {_USER_ACTIONS_SQL}", USER_ACTIONS
    ).fetchone()
    return int(version)


def _api_key(row: tuple[Any, ...]) -> ApiKey:
    id, name, owner, created, revoked, role = row
    return ApiKey(id, name, owner, created, revoked, None if role is None else Role(role))


def _keep_an_administrator(db: sqlite3.Connection, name: str, change: str) -> None:
    """Refuse a change after which no user would be an administrator."""
    (others,) = db.execute(
        "SELECT count(*) FROM user WHERE role = ? AND name != ?", (Role.ADMINISTRATOR, name)
    ).fetchone()
    if not others:
        reason = f"{name!r} is the last administrator and {change}: nobody could manage users"
        raise Invalid([Problem("name", reason)])


def _rowid(cursor: sqlite3.Cursor) -> int:
    assert cursor.lastrowid is not None  # an INSERT always has one
    return cursor.lastrowid


def _two_factor(db: sqlite3.Connection, name: str) -> TwoFactor | None:
    """``Store.two_factor`` on ``db``: the recovery codes this node used (``recovery_used``)
    are left out."""
    row = db.execute("SELECT totp, recovery FROM user WHERE name = ?", (name,)).fetchone()
    if row is None or not row[0]:
        return None
    used = {d for (d,) in db.execute("SELECT digest FROM recovery_used WHERE name = ?", (name,))}
    return TwoFactor(row[0], tuple(d for d in json.loads(row[1]) if d not in used))


def _insert_audit(
    db: sqlite3.Connection, at: float, author: str, action: str, target: str, detail: Any
) -> None:
    cursor = db.execute(
        "INSERT INTO audit (at, author, action, target, detail) VALUES (?, ?, ?, ?, ?)",
        (at, author, action, target, json.dumps(detail)),
    )
    audit_chain.link(db, _rowid(cursor))
