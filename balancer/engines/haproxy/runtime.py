"""HAProxy's Runtime API, pure: the commands the engine sends and parsers of the replies.

Commands to the master CLI (``show proc``, ``reload``) go as they are; commands to a worker are
prefixed ``@1`` (the current worker) or ``@!<pid>`` (an older one still finishing its
connections). Replies are parsed into plain values; nothing here opens a socket.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass

from balancer.engines.haproxy.render import REVISION_VARIABLE, runtime_weight
from balancer.model import RealServer, RealServerState, VirtualService
from balancer.plan import Plan

CURRENT = "@1"
# HAProxy's peers flags "resync from local" and "resync from remote" finished: only then does a
# worker hand its stick tables to the next one at a reload.
PEERS_RESYNC_FINISHED = 0x3
BATCH = 100  # Runtime API commands sent on one line


def worker(pid: int | None, command: str) -> str:
    """``command`` for worker ``pid``, or for the current worker."""
    return f"{CURRENT if pid is None else f'@!{pid}'} {command}"


def batches(commands: list[str]) -> list[str]:
    """Commands for the current worker, several to a line: the master CLI passes every
    command after a lone ``@1`` to that worker."""
    return [
        "; ".join([CURRENT, *commands[start : start + BATCH]])
        for start in range(0, len(commands), BATCH)
    ]


# --- show proc (master) ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Processes:
    master: int
    reloads: int
    failed: int  # reloads that failed since the last one that worked
    current: int | None  # the worker that takes new connections
    uptime: float  # of the current worker, in seconds
    old: tuple[int, ...]  # workers of earlier reloads, still relaying established connections


def parse_proc(text: str) -> Processes:
    master = current = None
    reloads = failed = 0
    uptime = 0.0
    old: list[int] = []
    section = "master"
    for line in text.splitlines():
        if line.startswith("# "):  # "# workers", "# old workers", "# programs"
            section = line[2:].strip()
            continue
        words = line.split()
        if len(words) < 4 or not words[0].isdigit():
            continue
        pid = int(words[0])
        if words[1] == "master":
            master, reloads = pid, int(words[2])
            found = re.search(r"\[failed: (\d+)\]", line)
            failed = int(found.group(1)) if found else 0
        elif section == "workers" and current is None:
            current, uptime = pid, _uptime(words[3])
        elif section == "old workers":
            old.append(pid)
    if master is None:
        raise ValueError(f"no master in show proc: {text!r}")
    return Processes(master, reloads, failed, current, uptime, tuple(old))


def _uptime(text: str) -> float:
    """HAProxy's ``0d00h02m07s`` in seconds."""
    found = re.fullmatch(r"(\d+)d(\d+)h(\d+)m(\d+)s", text)
    if found is None:
        return 0.0
    days, hours, minutes, seconds = map(int, found.groups())
    return float(((days * 24 + hours) * 60 + minutes) * 60 + seconds)


# --- show env, show peers (worker) ----------------------------------------------------------


def show_revision() -> str:
    return worker(None, f"show env {REVISION_VARIABLE}")


def parse_revision(text: str) -> int | None:
    """The revision a worker was started with, from ``show env``; None if it has none."""
    found = re.search(rf"^{REVISION_VARIABLE}=(\d+)$", text, re.MULTILINE)
    return int(found.group(1)) if found else None


def peers_synced(text: str) -> bool:
    """Whether ``show peers`` says the worker has finished taking over the stick tables (from
    an older worker, or by waiting long enough to know none would come). Only such a worker
    hands its tables to the next one at a reload; HAProxy 2.6 waits 5 seconds for each of the
    local and remote steps, so a worker started from one that had no tables needs 10."""
    found = re.search(r"flags=0x([0-9a-fA-F]+)", text)
    if found is None:
        return True  # no peers section runs: no tables to hand over
    return int(found.group(1), 16) & PEERS_RESYNC_FINISHED == PEERS_RESYNC_FINISHED


@dataclass(frozen=True, slots=True)
class Peer:
    """A peer of ``show peers``, as this worker sees it."""

    name: str
    remote: bool  # the other node's (not this node's own local peer)
    up: bool  # a session is established: changes flow both ways
    status: str  # HAProxy's last_status: ESTA, CONN (connection or TLS refused), HSHK, ...
    handshake: float | None  # seconds since the last handshake, successful or not
    pending: dict[str, int]  # by table: changes made here the peer has not acknowledged


def parse_peers(text: str) -> tuple[int, list[Peer]] | None:
    """The peers section's flags and its peers, from ``show peers``; None if none runs.

    For each table it shares with a peer, HAProxy shows the table's count of local changes
    (``localupdate``) and, on the line before, the last of them the peer acknowledged
    (``update``; ``last_pushed`` is the last sent). The counters are 32 bits and wrap."""
    found = re.search(r"flags=0x([0-9a-fA-F]+)", text)
    if found is None:
        return None
    peers: list[Peer] = []
    acked = 0
    for line in text.splitlines():
        fields = dict(word.split("=", 1) for word in line.split() if "=" in word)
        head = re.match(r"\s*0x[0-9a-f]+: id=([^(\s]+)\((\w+),(\w+)\)", line)
        if head is not None:
            name, kind, active = head.groups()
            status = fields.get("last_status", "NONE")
            peers.append(
                Peer(
                    name=name,
                    remote=kind == "remote",
                    up=active == "active" and status == "ESTA",
                    status=status,
                    handshake=_ago(fields.get("last_hdshk", "<NEVER>")),
                    pending={},
                )
            )
        elif "last_acked" in fields:
            acked = int(fields.get("update", "0"))
        elif line.strip().startswith("table:") and peers:
            local = int(fields.get("localupdate", "0"))
            peers[-1].pending[fields["id"]] = (local - acked) & 0xFFFFFFFF
    return int(found.group(1), 16), peers


def _ago(text: str) -> float | None:
    """HAProxy's human time (``4s``, ``1m5s``, ``2d3h``) in seconds; ``<PAST>`` is now."""
    if text == "<NEVER>":
        return None
    units = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    return float(sum(int(n) * units[u] for n, u in re.findall(r"(\d+)([dhms])", text)))


# --- show stat (worker) ---------------------------------------------------------------------

Row = dict[str, str]


def parse_stat(text: str) -> dict[tuple[str, str], Row]:
    """``show stat`` CSV as rows keyed by (proxy, server); FRONTEND and BACKEND are servers."""
    lines = text.lstrip("# ").splitlines()
    rows: dict[tuple[str, str], Row] = {}
    for row in csv.DictReader(io.StringIO("\n".join(lines))):
        if row.get("pxname") and row.get("svname"):
            rows[(row["pxname"], row["svname"])] = {k: v or "" for k, v in row.items() if k}
    return rows


# --- stick tables (worker) ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StickEntry:
    client: str
    server: str | None  # the real server's label; None if the entry names none
    in_use: bool  # a connection is open: the entry cannot expire before it ends
    expires_in: float  # seconds


def tables_used(text: str) -> dict[str, int]:
    """Entries in each stick table, from ``show table`` without a table's name."""
    return {
        found.group(1): int(found.group(2))
        for found in re.finditer(r"^# table: ([^,]+), .*\bused:(\d+)", text, re.MULTILINE)
    }


def parse_table(text: str, names: dict[int, str]) -> list[StickEntry]:
    """``show table`` entries; ``names`` are server labels by numeric id, for entries that
    carry only the id (those the engine restored itself after a reload)."""
    entries = []
    for line in text.splitlines():
        if " key=" not in line:
            continue
        fields = dict(word.split("=", 1) for word in line.split()[1:] if "=" in word)
        key = fields.get("server_key", "-")
        server_id = int(fields.get("server_id", "0") or 0)
        entries.append(
            StickEntry(
                client=fields["key"],
                server=key if key != "-" else names.get(server_id),
                in_use=fields.get("use", "0") != "0",
                expires_in=int(fields.get("exp", "0")) / 1000,
            )
        )
    return entries


def restore(table: str, entries: list[StickEntry], ids: dict[str, int]) -> list[str]:
    """Commands that put ``entries`` into ``table`` of a new worker, whose servers have the
    numeric ``ids`` by label (they change as servers come and go). Entries of servers that
    are gone are left out."""
    return [
        f"set table {table} key {entry.client} data.server_id {ids[entry.server]}"
        for entry in entries
        if entry.server is not None and entry.server in ids
    ]


def server_ids(dump: str) -> dict[tuple[str, str], int]:
    """(service, server label) -> HAProxy's numeric server id, from ``show servers state``."""
    ids = {}
    for line in dump.splitlines()[2:]:
        values = line.split()
        if len(values) > 3 and values[2].isdigit():
            ids[(values[1], values[3])] = int(values[2])
    return ids


# --- real server states at runtime ------------------------------------------------------------


def runtime_commands(plan: Plan) -> list[str]:
    """Commands (for the current worker) that take every real server the plan changes from
    its running weight, state and connection cap to the desired ones."""
    commands: list[str] = []
    for change in plan.changed:
        for old, new in change.servers_changed():
            commands += _server_commands(change.after, old, new)
    return commands


def _server_commands(vs: VirtualService, old: RealServer, new: RealServer) -> list[str]:
    name = f"{vs.label}/{new.label}"
    halted = RealServerState.HALT
    commands = []
    if new.state is halted and old.state is not halted:
        commands.append(f"set server {name} state maint")
    # The weight is set before a halted server comes back, so it returns with the new one.
    if runtime_weight(new) != runtime_weight(old):
        commands.append(f"set weight {name} {runtime_weight(new)}")
    if new.max_connections != old.max_connections:
        commands.append(f"set maxconn server {name} {new.max_connections}")
    if new.state is not halted and old.state is halted:
        commands.append(f"set server {name} state ready")
    return commands


def command_failed(reply: str) -> bool:
    """Runtime API commands that work answer nothing but a blank line each."""
    return bool(reply.strip())


# --- the server-state file handed to the next worker ------------------------------------------

# A file with no server in it: the format's version alone (HAProxy warns of an empty file).
NO_STATE = "1\n"


def carried_state(dump: str, plan: Plan) -> str:
    """The server-state file for the next worker, from the running worker's ``show servers
    state``: health only. A server keeps its health where the plan says it holds (the same
    address, port and health check) and it was not halted (HAProxy does not check a halted
    server); its weight and state are rewritten to the desired ones, so the file never
    overrides them."""
    lines = dump.strip().splitlines()
    if len(lines) < 2 or not lines[1].startswith("#"):
        return NO_STATE
    names = lines[1].lstrip("# ").split()
    desired = {
        (vs.label, rs.label): rs for vs in plan.config.virtual_services for rs in vs.real_servers
    }
    kept = lines[:2]
    for line in lines[2:]:
        values = line.split()
        if len(values) != len(names):
            continue
        row = dict(zip(names, values, strict=True))
        service, label = row["be_name"], row["srv_name"]
        new = desired.get((service, label))
        if new is None or not plan.keeps_health(service, label):
            continue
        change = plan.by_label.get(service)
        old = change.before.real_server(label) if change is not None else new
        if old is None or old.state is RealServerState.HALT:
            continue
        row["srv_admin_state"] = "5" if new.state is RealServerState.HALT else "0"
        row["srv_uweight"] = row["srv_iweight"] = str(runtime_weight(new))
        kept.append(" ".join(row[name] for name in names))
    return "\n".join(kept) + "\n" if len(kept) > 2 else NO_STATE


# --- HAProxy's own words when it refuses ------------------------------------------------------

_ALERT = re.compile(r"^\[ALERT\]\s*\((\d+)\)\s*:\s*(?:config\s*:\s*)?(.*)$")
_SUMMARY = (
    "Error(s) found in configuration file",
    "Fatal errors found in configuration",
    "Some protocols failed to start their listeners",
)
_FIELDS = (
    (re.compile(r"for proxy ([^:\s]+)"), "virtual_services[{0}].ports"),
    (re.compile(r"'server ([^/']+)/([^']+)'"), "virtual_services[{0}].real_servers[{1}]"),
    (re.compile(r"proxy '([^']+)'"), "virtual_services[{0}]"),
)


def alerts(output: str, pid: int | None = None) -> list[str]:
    """HAProxy's alerts in ``output`` (of ``haproxy -c``, or of the master during a reload:
    then only process ``pid``'s, not its workers'), without the generic summaries that follow
    the real reasons."""
    found = []
    for line in output.splitlines():
        match = _ALERT.match(line.strip())
        if match is None or (pid is not None and int(match.group(1)) != pid):
            continue
        if not any(summary in match.group(2) for summary in _SUMMARY):
            found.append(match.group(2).strip())
    return found


def rejection(found: list[str]) -> str:
    """One message for a refused configuration: the model's field when HAProxy names one,
    then HAProxy's own words."""
    text = "; ".join(found) or "no reason given"
    for alert in found:
        for pattern, field in _FIELDS:
            match = pattern.search(alert)
            if match:
                return f"{field.format(*match.groups())}: HAProxy: {text}"
    return f"HAProxy: {text}"
