"""How the store keeps revisions so that each costs what it changes.

Each virtual service's canonical JSON is stored once, in the ``service`` table under its
SHA-256. A revision is a manifest of service ids, written as a splice of its parent's manifest
(one service changed: a few bytes), whole every ``FULL_EVERY`` revisions, so reading any
revision replays at most that many small splices. The parsed services and the newest revisions
are kept in memory: reading the head, and saving an edit of it, parse and serialise only the
services the edit made.

A revision's digest is the SHA-256 of the configuration's canonical JSON (``digest``): the
same on every node that holds the same configuration.

``History`` is not thread-safe: the Store calls it under its lock, inside its transactions.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Self

from pydantic import ValidationError

from balancer.model import Config, VirtualService
from balancer.store.errors import NotFound, StoreError

# A revision's manifest is written whole at least this often, so reading any revision replays
# at most this many splices.
FULL_EVERY = 100
# Revisions kept parsed in memory: the head, the applied one, and what a page of history shows.
RECENT = 64
# Parsed services kept beyond those of the recent revisions before they are let go.
_SPARE = 1_000


@dataclass(frozen=True, slots=True)
class Revision:
    id: int
    created: float
    author: str
    message: str
    config: Config
    digest: str  # SHA-256 of the configuration's canonical JSON: the same on every node


@dataclass(frozen=True, slots=True)
class Stored:
    """A revision as read or written, with its manifest: what the next one is a splice of."""

    revision: Revision
    services: tuple[int, ...]
    depth: int


@dataclass(frozen=True, slots=True)
class Content:
    """A configuration taken apart as the store keeps it: canonical JSON of its settings and
    of each virtual service, and the service ids already known (None: look it up, or add it)."""

    config: Config
    texts: tuple[str, ...]
    ids: tuple[int | None, ...]
    settings: dict[str, Any]
    digest: str

    @classmethod
    def of(cls, config: Config, texts: tuple[str, ...], ids: tuple[int | None, ...]) -> Self:
        settings = _settings(config)
        return cls(config, texts, ids, settings, _digest(settings, texts))


class History:
    """What never changes once committed, kept in memory, and the reads and writes of revisions
    that use it."""

    def __init__(self) -> None:
        # Service id -> (parsed, canonical JSON).
        self._services: dict[int, tuple[VirtualService, str]] = {}
        # id() of a parsed service -> (that object, its service id): an edit keeps the services
        # it did not touch, so a save finds their ids without serialising them. The object is
        # held so that its id() is not reused.
        self._ids: dict[int, tuple[VirtualService, int]] = {}
        self._recent: OrderedDict[int, Stored] = OrderedDict()
        self._prune_at = _SPARE

    def known(self) -> Config | None:
        """The newest configuration in memory: its services were checked when they were saved."""
        return self._recent[max(self._recent)].revision.config if self._recent else None

    def content(self, config: Config) -> Content:
        services = config.virtual_services
        known = [self._ids.get(id(vs)) for vs in services]
        ids = tuple(
            k[1] if k is not None and k[0] is vs else None
            for k, vs in zip(known, services, strict=True)
        )
        texts = tuple(
            self._services[i][1] if i is not None else _canonical(vs.model_dump(mode="json"))
            for i, vs in zip(ids, services, strict=True)
        )
        return Content.of(config, texts, ids)

    def insert(
        self,
        db: sqlite3.Connection,
        id: int,
        created: float,
        author: str,
        message: str,
        content: Content,
    ) -> Stored:
        """Write revision ``id`` on top of the newest one, inside the caller's transaction."""
        ids = tuple(
            known if known is not None else _service_id(db, text)
            for known, text in zip(content.ids, content.texts, strict=True)
        )
        (parent,) = db.execute("SELECT max(id) FROM revision").fetchone()
        depth, services = 0, json.dumps(ids)
        if parent is not None:
            before = self.load(db, parent)
            start, end, middle = _splice(before.services, ids)
            # A splice as long as half the list saves little and costs a step at every read.
            if before.depth + 1 < FULL_EVERY and 2 * len(middle) < max(len(ids), 1):
                depth, services = before.depth + 1, json.dumps([start, end, middle])
        revision = Revision(id, created, author, message, content.config, content.digest)
        db.execute(
            "INSERT INTO revision (id, created, author, message, digest, settings, services, depth)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                id,
                created,
                author,
                message,
                revision.digest,
                _canonical(content.settings),
                services,
                depth,
            ),
        )
        return Stored(revision, ids, depth)

    def remember(self, stored: Stored, content: Content) -> None:
        """Keep what was just committed; never what a rolled-back transaction wrote."""
        services = content.config.virtual_services
        for n, known in enumerate(content.ids):
            if known is None:
                sid, vs = stored.services[n], services[n]
                self._services.setdefault(sid, (vs, content.texts[n]))
                self._ids[id(vs)] = (vs, sid)
        self._keep(stored)

    def load(self, db: sqlite3.Connection, id: int) -> Stored:
        """Revision ``id``, from memory or replayed from its last whole manifest."""
        if id in self._recent:
            self._recent.move_to_end(id)
            return self._recent[id]
        row = db.execute(
            "SELECT created, author, message, digest, settings, depth FROM revision WHERE id = ?",
            (id,),
        ).fetchone()
        if row is None:
            raise NotFound(f"there is no revision {id}")
        created, author, message, digest, settings, depth = row
        chain = db.execute(
            "SELECT id, services FROM revision WHERE id <= ? ORDER BY id DESC LIMIT ?",
            (id, depth + 1),
        ).fetchall()[::-1]
        # Start from the newest revision of the chain already in memory, else the whole list.
        start = max((n for n, (i, _) in enumerate(chain) if i in self._recent and n), default=0)
        ids = list(self._recent[chain[start][0]].services) if start else json.loads(chain[0][1])
        for _, splice in chain[start + 1 :]:
            begin, end, middle = json.loads(splice)
            ids[begin:end] = middle
        services = self._parsed(db, ids, id)
        try:
            config = Config.model_validate({**json.loads(settings), "virtual_services": services})
        except ValidationError as error:
            raise StoreError(f"revision {id} cannot be read: {error}") from None
        stored = Stored(Revision(id, created, author, message, config, digest), tuple(ids), depth)
        self._keep(stored)
        return stored

    def _parsed(
        self, db: sqlite3.Connection, ids: Sequence[int], revision: int
    ) -> list[VirtualService]:
        missing = sorted({sid for sid in ids if sid not in self._services})
        for chunk in range(0, len(missing), 500):
            wanted = missing[chunk : chunk + 500]
            rows = db.execute(
                f"SELECT id, document FROM service WHERE id IN ({','.join('?' * len(wanted))})",
                wanted,
            ).fetchall()
            for sid, text in rows:
                try:
                    vs = VirtualService.model_validate_json(text)
                except ValidationError as error:
                    raise StoreError(f"revision {revision} cannot be read: {error}") from None
                self._services[sid] = (vs, text)
                self._ids[id(vs)] = (vs, sid)
        return [self._services[sid][0] for sid in ids]

    def _keep(self, stored: Stored) -> None:
        self._recent[stored.revision.id] = stored
        self._recent.move_to_end(stored.revision.id)
        while len(self._recent) > RECENT:
            self._recent.popitem(last=False)
        # Services that only older revisions use are let go, a thousand or so at a time: each
        # save makes one, of a few KiB parsed.
        if max(len(self._services), len(self._ids)) > self._prune_at:
            kept = {sid for recent in self._recent.values() for sid in recent.services}
            self._services = {sid: self._services[sid] for sid in kept}
            self._ids = {id(vs): (vs, sid) for sid, (vs, _) in self._services.items()}
            self._prune_at = len(kept) + _SPARE


def split_revisions(db: sqlite3.Connection) -> None:
    """Schema step 3: each revision's whole document becomes its services, stored once each,
    and a whole manifest. The stored JSON is taken as it is, not parsed by today's model, so a
    revision reads back exactly as it did before."""
    for (id,) in db.execute("SELECT id FROM revision ORDER BY id").fetchall():
        (text,) = db.execute("SELECT config FROM revision WHERE id = ?", (id,)).fetchone()
        document = json.loads(text)
        services = [_canonical(vs) for vs in document.pop("virtual_services", [])]
        db.execute(
            "UPDATE revision SET digest = ?, settings = ?, services = ?, depth = 0 WHERE id = ?",
            (
                _digest(document, services),
                _canonical(document),
                json.dumps([_service_id(db, service) for service in services]),
                id,
            ),
        )


def digest(config: Config) -> str:
    """SHA-256 of the configuration's canonical JSON: what names its content on any node."""
    return _sha256(_canonical(config.model_dump(mode="json")))


def _settings(config: Config) -> dict[str, Any]:
    """The configuration apart from its virtual services, which are stored one by one."""
    return config.model_dump(mode="json", exclude={"virtual_services"})


def _canonical(value: Any) -> str:
    """The one JSON text of a value: keys sorted, no spaces, ASCII only."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _digest(settings: dict[str, Any], services: Sequence[str]) -> str:
    """``digest`` of a configuration from its settings and its services' canonical JSON: the
    same text hashed piece by piece, neither serialised again nor joined into one string
    (5,000 services: 5 ms rather than 25)."""
    hashed = hashlib.sha256()
    for piece in _pieces(settings, services):
        hashed.update(piece.encode())
    return hashed.hexdigest()


def _pieces(settings: dict[str, Any], services: Sequence[str]) -> Iterator[str]:
    yield "{"
    for n, key in enumerate(sorted([*settings, "virtual_services"])):
        yield ("," if n else "") + _canonical(key) + ":"
        if key == "virtual_services":
            yield "["
            for m, text in enumerate(services):
                yield "," + text if m else text
            yield "]"
        else:
            yield _canonical(settings[key])
    yield "}"


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _service_id(db: sqlite3.Connection, text: str) -> int:
    """The id of the service whose canonical JSON is ``text``, stored now if it is new."""
    key = _sha256(text)
    row = db.execute("SELECT id FROM service WHERE digest = ?", (key,)).fetchone()
    if row is not None:
        return int(row[0])
    cursor = db.execute("INSERT INTO service (digest, document) VALUES (?, ?)", (key, text))
    assert cursor.lastrowid is not None  # an INSERT always has one
    return cursor.lastrowid


def _splice(before: Sequence[int], after: Sequence[int]) -> tuple[int, int, list[int]]:
    """(start, end, middle) such that before[:start] + middle + before[end:] == after."""
    start = 0
    most = min(len(before), len(after))
    while start < most and before[start] == after[start]:
        start += 1
    end, tail = len(before), len(after)
    while end > start and tail > start and before[end - 1] == after[tail - 1]:
        end, tail = end - 1, tail - 1
    return start, end, list(after[start:tail])
