"""The Support download (the guide's Support menu): one tar.gz an operator sends to whoever
helps them, holding what that person asks for first: the configuration as saved and as running,
node settings, versions, the engine's status and configuration, the logs, the audit trail of
the last days, system facts and the HA pair's view.

Nothing secret leaves in it. What is gathered is read through the store's public methods,
which give no password hash and no API key digest, and every member then goes through
``redact`` (JSON) or ``redact_text`` (text): by field name, not by knowing each field, so a
setting added later (an alert's SMTP password, a webhook's secret) is redacted too; and by the
shape of a secret in free text (a PEM private key block, ``password=...``, an argon2 hash, an
API key). The WebUI's private key and the session secret are never read at all.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import platform
import re
import resource
import shutil
import sys
import tarfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from balancer import directory
from balancer.controller import Controller
from balancer.engines.haproxy import HAPROXY
from balancer.ha.keepalived import KEEPALIVED
from balancer.pair.cluster import Cluster
from balancer.store import Store
from balancer.users import KEY_PREFIX

REDACTED = "[redacted]"
MEDIA_TYPE = "application/gzip"
# The audit trail's last days, and at most this many of its entries.
AUDIT_DAYS = 7
AUDIT_MAX = 20_000
# The newest part of each log: enough for the last hours of a busy node, small enough to mail.
LOG_MAX = 1 << 20
# Read beyond LOG_MAX, so that a private key block cut by the tail is still seen whole.
_LOG_MARGIN = 64 << 10
# A command that tells a version or a system fact; a hung one is given up on.
COMMAND_TIMEOUT = 5.0

# A field whose name says it holds a secret. Matched anywhere in the name: smtp_password,
# webhook_secret, api_keys, digest, private_key, session_token; a user's TOTP secret and
# recovery code digests, as an HA pair's users snapshot names them (totp, recovery).
_SECRET_FIELD = re.compile(
    r"pass(word|wd|phrase)|secret|key|token|hash|digest|credential|private|signature|cookie"
    r"|totp|recovery",
    re.IGNORECASE,
)
_PEM_BLOCK = re.compile(
    r"-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----.*?-----END \1PRIVATE KEY-----", re.DOTALL
)
# A block cut by the start or the end of what was read.
_PEM_OPEN = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*\Z", re.DOTALL)
_PEM_CLOSE = re.compile(r"\A.*?-----END [A-Z0-9 ]*PRIVATE KEY-----", re.DOTALL)
# name=value or "name": "value" where the name says secret; keepalived's auth_pass VALUE.
_SECRET_SETTING = re.compile(
    r"""(\b[\w-]*(?:pass(?:word|wd|phrase)|secret|token|api[_-]?key|private[_-]?key)[\w-]*"""
    r"""\\?["']?\s*[:=]\s*|\bauth_pass\s+)(\\?"[^"\\]*\\?"|'[^']*'|[^\s,;&]+)""",
    re.IGNORECASE,
)
_ARGON2 = re.compile(r"\$argon2(?:id|i|d)\$[A-Za-z0-9+/=$,.-]+")
_API_KEY = re.compile(re.escape(KEY_PREFIX) + r"[A-Za-z0-9_-]{16,}")

README = """\
Balancer support archive
========================

Node:      {hostname}
Made:      {made} by {author}
Version:   Balancer {version}

What it holds
-------------
configuration/saved.json      the configuration as saved (the head revision)
configuration/running.json    the configuration the engine runs (the applied revision)
configuration/revisions.json  the newest revisions: number, time, author, message
node/settings.json            this node's settings (hostname, engine, ports, HA pair)
node/users.json               user names and API key names, owners and dates
node/directory.json           directory sign-in's settings (LDAP, RADIUS), not its secret
versions.json                 Balancer, Python, HAProxy, keepalived, the kernel
engine/status.json            System Overview: the engine's status, pending changes
engine/{engine_file:<23}the configuration as the engine runs it
logs/                         the newest {log_mib} MiB of each log (Balancer, engine, keepalived)
audit.json                    the audit trail of the last {days} days (at most {audit_max} entries)
system/                       interfaces and addresses, routes, load, memory, disk, limits
ha/                           the HA pair as this node sees it, keepalived's configuration
                              (only on a node of a pair)
*.error.txt                   why a part could not be gathered, in one line

What was redacted
-----------------
Replaced by "{redacted}" before anything was written here:
- any JSON field whose name contains password, passwd, passphrase, secret, key, token,
  hash, digest, credential, private, signature, cookie, totp or recovery (password hashes,
  API key digests, alert passwords, webhook secrets, TOTP secrets and recovery codes, and
  fields added later with such names);
- in any text: PEM private key blocks (whole, or cut at either end), name=value or
  "name": "value" where the name contains password, secret, token, api_key or private_key,
  keepalived's auth_pass, argon2 password hashes and API keys ({key_prefix}...).
Never read at all: the WebUI's and the pair's private keys, the session secret, the store's
password hashes and API key digests.
"""


def redact(value: Any, *, secret: bool = False) -> Any:
    """``value`` (a JSON document) with the values of secret-named fields replaced by
    REDACTED, and every string through ``redact_text``. ``secret``: ``value`` is a secret
    field's, so its plain values are redacted too (a list of keys)."""
    if isinstance(value, dict):
        return {k: _field(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(item, secret=secret) for item in value]
    if secret and value is not None and not isinstance(value, bool):
        return REDACTED
    if isinstance(value, str):
        return redact_text(value)
    return value


def _field(name: str, value: Any) -> Any:
    if not _SECRET_FIELD.search(name):
        return redact(value)
    # A marker that says whether a secret is set says nothing of it.
    if value is None or isinstance(value, bool) or value == "":
        return value
    if isinstance(value, dict | list | tuple):
        return redact(value, secret=True)
    return REDACTED


def redact_text(text: str) -> str:
    """``text`` with every secret-looking part replaced by REDACTED."""
    text = _PEM_BLOCK.sub(REDACTED, text)
    text = _PEM_OPEN.sub(REDACTED, text)
    text = _PEM_CLOSE.sub(REDACTED, text)
    text = _SECRET_SETTING.sub(lambda found: found.group(1) + REDACTED, text)
    text = _ARGON2.sub(REDACTED, text)
    return _API_KEY.sub(REDACTED, text)


def redact_log(text: str) -> str:
    """A log's text redacted: each JSON line as a document (a secret field in ``extra``), the
    rest as text."""
    lines = []
    for line in redact_text(text).splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            lines.append(line)
            continue
        lines.append(json.dumps(redact(entry)) if isinstance(entry, dict) else line)
    return "".join(f"{line}\n" for line in lines)


def tail(path: Path, size: int = LOG_MAX) -> str:
    """The newest ``size`` bytes of the log at ``path``, from a line's start, redacted."""
    with path.open("rb") as log:
        log.seek(0, os.SEEK_END)
        end = log.tell()
        log.seek(max(0, end - size - _LOG_MARGIN))
        data = log.read()
    text = redact_log(data.decode("utf-8", errors="replace"))
    if len(text.encode()) <= size:
        return text
    kept = text.encode()[-size:].decode("utf-8", errors="ignore")
    return kept[kept.find("\n") + 1 :]


class Archive:
    """The members of one support archive, each redacted as it is added."""

    def __init__(self) -> None:
        self.members: dict[str, bytes] = {}

    def json(self, name: str, document: Any) -> None:
        text = json.dumps(redact(document), indent=2, default=str)
        self.members[name] = (text + "\n").encode()

    def text(self, name: str, text: str, *, log: bool = False) -> None:
        self.members[name] = (redact_log(text) if log else redact_text(text)).encode()

    async def part(self, name: str, gather: Callable[[], Awaitable[None]]) -> None:
        """Gather one part; if it fails, say why in NAME.error.txt and go on with the rest."""
        try:
            await gather()
        except Exception as error:  # one part missing must not cost the operator the rest
            reason = f"{type(error).__name__}: {error}".splitlines()[0]
            self.text(f"{name}.error.txt", f"{name} could not be gathered: {reason}\n")

    def tar_gz(self, folder: str, made: float) -> bytes:
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w:gz") as archive:
            for name, data in self.members.items():
                info = tarfile.TarInfo(f"{folder}/{name}")
                info.size, info.mtime, info.mode = len(data), int(made), 0o644
                archive.addfile(info, io.BytesIO(data))
        return out.getvalue()


def attachment(name: str) -> dict[str, str]:
    """The headers that make a browser save the archive as ``name``."""
    return {"Content-Disposition": f'attachment; filename="{name}"'}


def file_name(hostname: str, made: float) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(made))
    plain = "".join(c if c.isalnum() or c in "-_." else "_" for c in hostname)
    return f"balancer-support-{plain}-{stamp}.tar.gz"


async def archive(
    store: Store,
    controller: Controller,
    cluster: Cluster,
    *,
    author: str,
    clock: Callable[[], float] = time.time,
) -> tuple[str, bytes]:
    """The support archive's file name and bytes; the download is audited first, so the
    archive's audit trail says who made it."""
    store.audit(author=author, action="support_archive")
    made = clock()
    data_dir = store.path.parent
    settings = store.node_settings()
    found = Archive()

    async def configuration() -> None:
        found.json("configuration/saved.json", store.export())
        applied = store.applied()
        if applied is not None:
            found.json("configuration/running.json", store.export(applied.revision))
        revisions = [
            {"id": r.id, "created": r.created, "author": r.author, "message": r.message}
            for r in store.revisions(100)
        ]
        found.json("configuration/revisions.json", revisions)

    async def node() -> None:
        found.json("node/settings.json", settings.model_dump(mode="json"))
        found.json(
            "node/users.json",
            {
                "users": [asdict(user) for user in store.users()],
                "api_keys": [asdict(key) for key in store.api_keys()],
            },
        )
        found.json("node/directory.json", directory.shown(store))

    async def versions() -> None:
        said = await asyncio.gather(_run(HAPROXY, "-v"), _run(KEEPALIVED, "-v"))
        # Their first line names the version; the rest is build options.
        haproxy, keepalived = (text.partition("\n")[0] for text in said)
        found.json(
            "versions.json",
            {
                "balancer": _version(),
                "python": sys.version,
                "haproxy": haproxy,
                "keepalived": keepalived,
                "kernel": " ".join(platform.uname()),
                "engine": controller.engine.name,
            },
        )

    async def engine() -> None:
        found.json("engine/status.json", (await controller.overview()).model_dump(mode="json"))
        name = "haproxy.cfg" if controller.engine.name == "haproxy" else "configuration.txt"
        found.text(f"engine/{name}", await controller.configuration())

    async def log_files() -> None:
        # With each log its newest rotated copy (balancer.logs.rotate): a log rotated a moment
        # ago would hold almost nothing of what was asked about.
        folder = data_dir / "logs"
        logs = sorted([*folder.glob("*.log"), *folder.glob("*.out"), *folder.glob("*.1")])
        heartbeat = cluster.heartbeat
        if heartbeat is not None and heartbeat.keepalived.log.is_file():
            logs.append(heartbeat.keepalived.log)
        for path in logs:
            if path.is_file():
                found.members[f"logs/{path.name}"] = tail(path).encode()

    async def audit() -> None:
        since = made - AUDIT_DAYS * 86400
        entries = [asdict(e) for e in store.audit_log(AUDIT_MAX) if e.at >= since]
        found.json("audit.json", entries)

    async def system() -> None:
        commands = {
            "addresses": ("ip", "-j", "address"),
            "routes": ("ip", "-j", "route"),
            "routes6": ("ip", "-j", "-6", "route"),
        }
        said = await asyncio.gather(*(_run(*command) for command in commands.values()))
        for name, text in zip(commands, said, strict=True):
            found.text(f"system/{name}.json", text)
        disk = shutil.disk_usage(data_dir)
        found.json(
            "system/node.json",
            {
                "load": os.getloadavg(),
                "cpus": os.cpu_count(),
                "disk": {"path": str(data_dir), **disk._asdict()},
                "open_files": dict(
                    zip(("soft", "hard"), resource.getrlimit(resource.RLIMIT_NOFILE), strict=True)
                ),
                "uptime": _read("/proc/uptime"),
            },
        )
        found.text("system/meminfo.txt", _read("/proc/meminfo"))

    async def pair() -> None:
        view = cluster.view()
        if view is None:
            return
        found.json("ha/view.json", {"view": asdict(view), "fault": cluster.fault})
        heartbeat = cluster.heartbeat
        if heartbeat is not None and heartbeat.keepalived.config.is_file():
            found.text("ha/keepalived.conf", heartbeat.keepalived.config.read_text())

    for name, gather in (
        ("configuration", configuration),
        ("node", node),
        ("versions", versions),
        ("engine", engine),
        ("logs", log_files),
        ("audit", audit),
        ("system", system),
        ("ha", pair),
    ):
        await found.part(name, gather)
    engine_file = "haproxy.cfg" if controller.engine.name == "haproxy" else "configuration.txt"
    readme = README.format(
        hostname=settings.hostname,
        made=datetime.fromtimestamp(made, UTC).isoformat(timespec="seconds"),
        author=author,
        version=_version(),
        engine_file=engine_file,
        log_mib=LOG_MAX >> 20,
        days=AUDIT_DAYS,
        audit_max=AUDIT_MAX,
        redacted=REDACTED,
        key_prefix=KEY_PREFIX,
    )
    found.members = {"README.txt": readme.encode(), **found.members}
    name = file_name(settings.hostname, made)
    return name, found.tar_gz(name.removesuffix(".tar.gz"), made)


def _version() -> str:
    try:
        return metadata.version("balancer")
    except metadata.PackageNotFoundError:
        return "unknown"


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as error:
        return f"not readable: {error.strerror}"


async def _run(*command: str) -> str:
    """What ``command`` prints (its first lines for a version), or why it could not run."""
    try:
        process = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
    except OSError as error:
        return f"not run: {error.strerror}"
    try:
        out, _ = await asyncio.wait_for(process.communicate(), COMMAND_TIMEOUT)
    except TimeoutError:
        process.kill()
        await process.wait()
        return f"no answer in {COMMAND_TIMEOUT:g} s"
    return out.decode(errors="replace").strip()
