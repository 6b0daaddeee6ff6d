"""Persistence replication between the built-in engines of an HA pair (the guide's TCP 7778).

Each node pushes its own changes over the connection it makes to the peer and takes the peer's
over the one the peer makes to it, both mutual TLS 1.3 with the pair's authority alone. One
direction is a stream of JSON lines, each a batch:

    {"hello": 1}                                  the protocol's version, first
    {"seq": 1, "changes": [[service, client, server, age], ...]}
    ...                                           the whole table (oldest first), then
    {"seq": n, "changes": [...], "end": true}     the end of it (and clears made while apart)
    {"seq": n + 1, "changes": [...]}              then every change, batched by the flush

and the other direction says ``{"ack": seq}`` once a batch is applied, or ``{"again": true}``
when the receiver wants the whole table again: it lost part of its own (a worker started
again) or can keep more of the peer's (a table or a real server new in a revision).
An idle sender says ``{}`` every second, so that either end finds a silent link dead.
A change is ``persistence.Change``: a new or renewed entry with its age, a dropped one (server
null) or a clear (client null too). Ages, not times, so the nodes' clocks need not agree, and
the receiver keeps whichever copy was used last (``StickTable.learn``).

The tables themselves are the data plane's: a single engine process's, or with workers the
supervisor's, which asks every worker and routes each client to its worker as the kernel does
(``Tables``, ``workers.Supervisor``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import socket
import ssl
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from balancer.engines import Replication
from balancer.engines.builtin.persistence import Change, as_change
from balancer.state import ReplicationStatus, TableReplication

log = logging.getLogger("balancer.engine")

VERSION = 1
FILE = "replication.json"
BATCH = 2000  # changes a line carries: 100,000 entries are 50 lines
FLUSH = 0.05  # the journal is sent this often: well under a second of lag, 20 lines a second
# ...and this often once a flush found nothing: with workers each flush asks every one of them
# (idle with 2 workers, measured: 1.8 % of a core at FLUSH, 0.5 % at FLUSH_IDLE).
FLUSH_IDLE = 0.2
CONNECT_TIMEOUT = 2.0  # a first try that gets no answer in this finds the peer absent
BACKOFF = 0.1  # the next try after a failure waits this, doubled each time...
BACKOFF_MAX = 2.0  # ...up to this
LISTEN_AGAIN = 2.0  # the node's address may come later than the engine
# A link that says nothing for HEARTBEAT sends ``{}``; one silent for DEAD is dead: a peer cut
# off sends no FIN, and "up" must not go on saying so (the receiver's read times out, the
# sender's unacknowledged bytes time out in TCP).
HEARTBEAT = 1.0
DEAD = 3.0
LINE_LIMIT = 16 * 1024 * 1024


class Tables(Protocol):
    """The data plane's persistence tables, as replication sees them."""

    async def journal(self, on: bool) -> None:
        """Journal every sticky table's changes (tables added later too), or stop."""

    async def drain(self) -> list[Change]:
        """What changed since the last drain."""

    async def dump(self) -> list[Change]:
        """Every entry, as changes."""

    async def learn(self, changes: list[Change]) -> None:
        """Apply the peer's changes; entries for servers this node does not run are not kept."""

    async def entries(self) -> dict[str, int]:
        """Entries of each sticky virtual service."""


# --- the settings, kept beside the engine ----------------------------------------------------


def load(data_dir: Path) -> Replication | None:
    try:
        data = json.loads((data_dir / FILE).read_text())
    except FileNotFoundError:
        return None
    return settings(data)


def settings(data: dict[str, Any] | None) -> Replication | None:
    if data is None:
        return None
    return Replication(
        local=str(data["local"]),
        peer=str(data["peer"]),
        port=int(data["port"]),
        certificate=Path(data["certificate"]),
        key=Path(data["key"]),
        authority=Path(data["authority"]),
    )


def dump_settings(replication: Replication) -> dict[str, Any]:
    return {name: str(value) for name, value in asdict(replication).items()} | {
        "port": replication.port
    }


def contexts(replication: Replication) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """Server and client contexts: TLS 1.3, this node's certificate, the pair's authority as
    the only one trusted, a certificate required both ways. Names are not checked: the pair's
    authority signs two certificates, both nodes', and the source address is checked instead."""
    made = []
    for purpose in (ssl.PROTOCOL_TLS_SERVER, ssl.PROTOCOL_TLS_CLIENT):
        context = ssl.SSLContext(purpose)
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        context.check_hostname = False
        context.verify_mode = ssl.CERT_REQUIRED
        try:
            context.load_cert_chain(replication.certificate, replication.key)
            context.load_verify_locations(replication.authority)
        except ssl.SSLError as error:
            raise ValueError(
                f"{replication.certificate}, {replication.key}, {replication.authority}: "
                f"not a certificate, its key and an authority ({error.reason or error})"
            ) from None
        made.append(context)
    return made[0], made[1]


# --- what is owed to the peer -----------------------------------------------------------------


@dataclass
class Ledger:
    """Changes made here that the peer has not acknowledged: per table how many, and since
    when. While the link is down they are counted, not kept: the whole table sent at the next
    connection carries them, and its end marker's acknowledgement settles them."""

    sent: list[tuple[int | None, float, Counter[str]]] = field(default_factory=list)

    def add(self, seq: int | None, made: float, changes: list[Change]) -> None:
        counts = Counter(change[0] for change in changes)
        if seq is None and self.sent and self.sent[-1][0] is None:
            _, first, owed = self.sent[-1]
            self.sent[-1] = (None, first, owed + counts)
        else:
            self.sent.append((seq, made, counts))

    def apart(self) -> None:
        """The link went down: everything owed is owed to the next whole table."""
        if self.sent:
            owed: Counter[str] = Counter()
            for _, _, counts in self.sent:
                owed += counts
            self.sent = [(None, min(made for _, made, _ in self.sent), owed)]

    def settle_with(self, seq: int) -> None:
        """The whole table goes with ``seq`` as its end: it settles what was owed."""
        self.sent = [(seq if s is None else s, made, counts) for s, made, counts in self.sent]

    def ack(self, seq: int) -> None:
        while self.sent and (first := self.sent[0][0]) is not None and first <= seq:
            self.sent.pop(0)

    def owed(self, service: str, now: float) -> tuple[int, float]:
        """Pending changes of ``service`` and the age of the oldest."""
        pending = [(counts[service], made) for _, made, counts in self.sent if counts[service]]
        if not pending:
            return 0, 0.0
        return sum(n for n, _ in pending), now - min(made for _, made in pending)


# --- the link ---------------------------------------------------------------------------------


class Replicator:
    """Replication as configured (``configure``), kept in ``data_dir`` for the next start."""

    def __init__(self, tables: Tables, data_dir: Path) -> None:
        self.tables = tables
        self.data_dir = data_dir
        self.replication: Replication | None = None
        self._pem: tuple[bytes, ...] = ()
        self._tasks: list[asyncio.Task[None]] = []
        self._server: asyncio.Server | None = None
        self._incoming: asyncio.StreamWriter | None = None
        self._receiving: asyncio.Task[None] | None = None  # the handler of the incoming one
        self._outbox: list[tuple[float, list[Change]]] | None = None  # None: not connected
        self._wake = asyncio.Event()
        self._peer_is_back = asyncio.Event()  # it connected to us: connect to it now
        self._again = False
        self._warned = False  # of a peer whose connections fail before they say hello
        self.ledger = Ledger()
        self.pushing = self.pulling = False
        self.since: float | None = None
        self.synced = False
        self._clears: dict[str, float] = {}  # clears made while apart: when

    async def start(self) -> None:
        """Go on as the engine did before it stopped (once it runs a revision: the peer's
        entries are kept only for services that run)."""
        try:
            replication = load(self.data_dir)
        except (OSError, ValueError, KeyError) as error:
            log.error("%s: cannot be read (%s); not replicating", self.data_dir / FILE, error)
            return
        if replication is not None:
            try:
                await self.configure(replication)
            except ValueError as error:
                log.error("persistence replication: %s", error)

    async def configure(self, replication: Replication | None) -> None:
        """Replicate as ``replication`` says, or stop; the same again changes nothing.
        ValueError names what cannot be used."""
        path = self.data_dir / FILE
        if replication is None:
            if self.replication is not None:
                await self._stop()
                await self.tables.journal(False)
                log.info("persistence replication stopped", extra={"event": "replication"})
            path.unlink(missing_ok=True)
            return
        pem = _read(replication)
        if replication == self.replication and pem == self._pem:
            return
        # Made before what runs is stopped: files that cannot be used change nothing.
        server_context, client_context = contexts(replication)
        await self._stop()
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(dump_settings(replication)) + "\n")
        tmp.replace(path)
        self.replication, self._pem = replication, pem
        self.synced, self.since, self.ledger = False, None, Ledger()
        await self.tables.journal(True)
        loop = asyncio.get_running_loop()
        # Listening before connecting: the peer, told so, connects back at once (_back_off).
        listening = loop.create_task(self._listen(replication, server_context))
        await asyncio.wait([listening], timeout=CONNECT_TIMEOUT)
        self._tasks = [
            listening,
            loop.create_task(self._push(replication, client_context)),
            loop.create_task(self._flush()),
        ]
        log.info(
            "persistence replication with %s:%s",
            replication.peer,
            replication.port,
            extra={"event": "replication", "peer": replication.peer},
        )

    def again(self) -> None:
        """Part of this node's table is lost (a worker started again): ask the peer for all."""
        self._again = True
        if self._incoming is not None:
            self._incoming.write(b'{"again": true}\n')
            self._again = False

    async def status(self) -> ReplicationStatus | None:
        replication = self.replication
        if replication is None:
            return None
        now = time.monotonic()
        tables = []
        for service, count in sorted((await self.tables.entries()).items()):
            pending, lag = self.ledger.owed(service, now)
            tables.append(
                TableReplication(service=service, entries=count, pending=pending, lag=lag)
            )
        return ReplicationStatus(
            peer=f"{replication.peer}:{replication.port}",
            up=self.pushing and self.pulling,
            since=self.since,
            synced=self.synced,
            tables=tuple(tables),
        )

    async def close(self) -> None:
        """Stop replicating for now; the settings stay for the next start."""
        await self._stop()

    async def _stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._incoming is not None:
            self._incoming.close()
        if self._receiving is not None:
            # Ended by its connection's end, not cancelled: asyncio's streams log a cancelled
            # handler as an error.
            await asyncio.wait([self._receiving], timeout=CONNECT_TIMEOUT)
        self.replication, self._pem = None, ()
        self._outbox = None
        self.pushing = self.pulling = False

    def _linked(self, pushing: bool | None = None, pulling: bool | None = None) -> None:
        up = self.pushing and self.pulling
        if pushing is not None:
            self.pushing = pushing
        if pulling is not None:
            self.pulling = pulling
        if (self.pushing and self.pulling) != up or self.since is None:
            self.since = time.time()
            if (self.pushing and self.pulling) != up:
                log.info(
                    "persistence replication link %s",
                    "up" if not up else "down",
                    extra={"event": "replication", "up": not up},
                )

    # --- this node's changes, to the peer ---

    async def _flush(self) -> None:
        changes: list[Change] = []
        while True:
            await asyncio.sleep(FLUSH if changes else FLUSH_IDLE)
            try:
                changes = await self.tables.drain()
            except Exception:  # replication must not end quietly: said, and tried again
                log.exception("persistence replication: the tables' changes cannot be read")
                continue
            if not changes:
                continue
            now = time.monotonic()
            if self._outbox is not None:
                self._outbox.append((now, changes))
                self._wake.set()
            else:
                self.ledger.add(None, now, changes)
                for service, client, _, age in changes:
                    if client is None:
                        self._clears[service] = now - age

    async def _push(self, replication: Replication, context: ssl.SSLContext) -> None:
        delay, first = BACKOFF, True
        while True:
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT):
                    reader, writer = await asyncio.open_connection(
                        replication.peer,
                        replication.port,
                        ssl=context,
                        local_addr=(replication.local, 0),
                        limit=LINE_LIMIT,
                    )
            except (OSError, TimeoutError) as error:
                if first:
                    # Nobody there to learn from: this node may take the floating IPs.
                    self.synced = True
                    self._linked()
                    log.info(
                        "persistence replication: the peer %s:%s does not answer (%s); "
                        "nothing to learn from it",
                        replication.peer,
                        replication.port,
                        str(error) or type(error).__name__,
                        extra={"event": "replication"},
                    )
                first = False
                delay = BACKOFF if await self._back_off(delay) else min(delay * 2, BACKOFF_MAX)
                continue
            first, delay = False, BACKOFF
            try:
                await self._send(reader, writer)
            except (OSError, ValueError, KeyError, asyncio.IncompleteReadError) as error:
                # Said once per link that was up: a peer that refuses each try (another engine,
                # another version) is not a line every two seconds.
                log.log(
                    logging.INFO if self.pushing else logging.DEBUG,
                    "persistence replication: sending to the peer ended: %s",
                    str(error) or type(error).__name__,
                )
            except Exception:  # as in _flush: said, and connected again
                log.exception("persistence replication: sending to the peer failed")
            finally:
                self._outbox = None
                self.ledger.apart()
                self._linked(pushing=False)
                writer.close()
            await self._back_off(delay)

    async def _back_off(self, delay: float) -> bool:
        """Wait ``delay``, or less if the peer connects to this node meanwhile (then True): a
        node that starts again learns this one's table without waiting out its backoff."""
        self._peer_is_back.clear()
        try:
            async with asyncio.timeout(delay):
                await self._peer_is_back.wait()
        except TimeoutError:
            return False
        return True

    async def _send(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _dead_after(writer)
        writer.write(b'{"hello": %d}\n' % VERSION)
        self._outbox = []  # changes from now on wait behind the whole table
        seq = await self._send_table(writer, 0)
        self._linked(pushing=True)
        loop = asyncio.get_running_loop()
        acks = loop.create_task(self._acks(reader))
        said = loop.time()
        try:
            while not acks.done():
                waiting = loop.create_task(self._wake.wait())
                await asyncio.wait(
                    [acks, waiting], timeout=HEARTBEAT, return_when="FIRST_COMPLETED"
                )
                waiting.cancel()
                self._wake.clear()
                if self._again:
                    self._again = False
                    seq = await self._send_table(writer, seq)
                    said = loop.time()
                outbox, self._outbox = self._outbox or [], []
                for made, changes in outbox:
                    for start in range(0, len(changes), BATCH):
                        batch = changes[start : start + BATCH]
                        seq += 1
                        self.ledger.add(seq, made, batch)
                        writer.write(_line({"seq": seq, "changes": batch}))
                        said = loop.time()
                if loop.time() - said >= HEARTBEAT:
                    writer.write(b"{}\n")
                    said = loop.time()
                await writer.drain()
            acks.result()
        finally:
            acks.cancel()

    async def _send_table(self, writer: asyncio.StreamWriter, seq: int) -> int:
        """The whole table after ``seq``, then its end; return the end's number."""
        changes = await self.tables.dump()
        for start in range(0, len(changes), BATCH):
            seq += 1
            writer.write(_line({"seq": seq, "changes": changes[start : start + BATCH]}))
            await writer.drain()
        now = time.monotonic()
        clears = [(service, None, None, now - when) for service, when in self._clears.items()]
        self._clears = {}
        seq += 1
        writer.write(_line({"seq": seq, "changes": clears, "end": True}))
        await writer.drain()
        self.ledger.settle_with(seq)
        return seq

    async def _acks(self, reader: asyncio.StreamReader) -> None:
        while line := await reader.readline():
            message = json.loads(line)
            if "ack" in message:
                self.ledger.ack(int(message["ack"]))
            elif message.get("again"):
                self._again = True
                self._wake.set()

    # --- the peer's changes, here ---

    async def _listen(self, replication: Replication, context: ssl.SSLContext) -> None:
        logged = False
        while self._server is None:
            try:
                self._server = await asyncio.start_server(
                    lambda r, w: self._receive(replication, r, w),
                    replication.local,
                    replication.port,
                    ssl=context,
                    reuse_address=True,
                    limit=LINE_LIMIT,
                    ssl_handshake_timeout=CONNECT_TIMEOUT * 2,
                )
            except OSError as error:
                if not logged:
                    log.warning(
                        "persistence replication: cannot listen on %s:%s (%s); trying again",
                        replication.local,
                        replication.port,
                        error.strerror or error,
                    )
                    logged = True
                await asyncio.sleep(LISTEN_AGAIN)

    async def _receive(
        self, replication: Replication, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        source = writer.get_extra_info("peername")[0]
        if ipaddress.ip_address(source) != ipaddress.ip_address(replication.peer):
            log.warning(
                "persistence replication: refused a connection from %s, not the peer", source
            )
            writer.close()
            return
        if self._incoming is not None:  # the peer connected again: the old one is dead
            self._incoming.close()
        self._incoming, self._receiving = writer, asyncio.current_task()
        _dead_after(writer)
        heard = False
        try:
            hello = json.loads(await _heard(reader))
            if hello.get("hello") != VERSION:
                raise ValueError(f"the peer speaks version {hello.get('hello')}, not {VERSION}")
            heard, self._warned = True, False
            self._linked(pulling=True)
            self._peer_is_back.set()
            self._again = False  # the peer's whole table follows its hello anyway
            while line := await _heard(reader):
                message = json.loads(line)
                if "seq" not in message:  # the sender is idle, not gone
                    continue
                await self.tables.learn([as_change(change) for change in message["changes"]])
                if message.get("end") and not self.synced:
                    self.synced = True
                    log.info(
                        "persistence replication: the peer's whole table is learnt",
                        extra={"event": "replication", "synced": True},
                    )
                writer.write(b'{"ack": %d}\n' % int(message["seq"]))
        except (OSError, ValueError, KeyError, TypeError, TimeoutError) as error:
            # A peer that fails before its hello is warned of once until one gets through.
            level = logging.INFO if heard else logging.DEBUG if self._warned else logging.WARNING
            self._warned = self._warned or not heard
            log.log(
                level,
                "persistence replication: receiving from the peer ended: %s",
                str(error) or type(error).__name__,
            )
        except Exception:  # as in _flush: said; the peer connects again
            log.exception("persistence replication: the peer's changes could not be taken")
        finally:
            writer.close()
            if self._incoming is writer:
                self._incoming = self._receiving = None
                self._linked(pulling=False)


async def _heard(reader: asyncio.StreamReader) -> bytes:
    async with asyncio.timeout(DEAD):
        return await reader.readline()


def _dead_after(writer: asyncio.StreamWriter) -> None:
    """Bytes the peer has not acknowledged for DEAD end the connection (TCP_USER_TIMEOUT)."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(DEAD * 1000))


def _line(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def _read(replication: Replication) -> tuple[bytes, ...]:
    files = (replication.certificate, replication.key, replication.authority)
    try:
        return tuple(path.read_bytes() for path in files)
    except OSError as error:
        raise ValueError(f"{error.filename}: cannot be read ({error.strerror})") from None
