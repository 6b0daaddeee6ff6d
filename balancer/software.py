"""Software Update (the guide's 8.4.2): a checked archive installed beside the running Balancer,
the switch to it, Roll back, and the online check for a newer release.

Everything lives under ``<data_dir>/software``:

    upload/archive.tar, upload/checksum   the archive being offered, once it passed the check
    <version>/venv                        an installed Balancer (the first one run is a link to
                                          the environment the appliance was installed in)
    <version>/manifest.json               written last: a version without it is not installed
    current, previous                     links to a <version>
    online.json                           the online check's last answer

The management service runs ``current``: at its start (``balancer serve``), and after a switch,
which restarts only the management service. The engine's processes are let go of and adopted by
the new version, so no connection through a virtual service drops. Each refusal is
``update.Refused``, one line naming its reason, and leaves every file here as it was.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import functools
import json
import logging
import os
import shutil
import sys
import tarfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urljoin, urlsplit

import httpx
from cryptography.exceptions import InvalidSignature

from balancer import update, validate
from balancer.model import NodeSettings
from balancer.store import Store

log = logging.getLogger("balancer.software")

SOFTWARE = "software"
CURRENT, PREVIOUS = "current", "previous"
UPLOAD = "upload"
ONLINE = "online.json"
# The largest archive taken: a release's wheels are some tens of MB.
MAX_ARCHIVE = 512 << 20
# Creating the environment and installing a few dozen wheels from disk; a hung installer ends.
INSTALL_TIMEOUT = 600.0
# The online check: every few hours, each asking for a small index, bounded in time and size.
ONLINE_INTERVAL = 6 * 3600.0
ONLINE_TIMEOUT = 10.0
ONLINE_MAX = 1 << 20
INDEX_FORMAT = "balancer-update-index/1"
INDEX = "latest.json"
# A version's Python imports only its own environment: `-m` would put the working directory
# first on the path (a checkout there is another Balancer), and PYTHONPATH would too.
ISOLATED = ("-I",)


@dataclass(frozen=True, slots=True)
class Versions:
    """What runs and what Roll back would return to."""

    running: str
    current: str | None  # None until the first update: the installation itself runs
    previous: str | None
    installed: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Online:
    """The online check's last answer."""

    url: str
    checked: float
    available: str | None = None  # a newer version, signed by the trusted key
    archive: str | None = None  # where that version's archive is
    error: str | None = None


def of(data_dir: Path) -> Software:
    """The one Software of a data directory, which the API and the WebUI share (its lock)."""
    return _of(data_dir.resolve())


@functools.cache
def _of(data_dir: Path) -> Software:
    return Software(data_dir)


class Software:
    def __init__(
        self,
        data_dir: Path,
        *,
        running: str | None = None,
        prefix: str = sys.prefix,
    ) -> None:
        self.root = data_dir / SOFTWARE
        self.running = running or metadata.version("balancer")
        self.prefix = Path(prefix)
        # One install or roll back at a time.
        self.lock = asyncio.Lock()

    # --- what there is ---------------------------------------------------------------------

    def versions(self) -> Versions:
        installed = sorted(
            (
                p.name
                for p in self._dirs()
                if (p / update.MANIFEST).exists() or (p / "venv").is_symlink()
            ),
            key=_order,
        )
        return Versions(
            running=self.running,
            current=self._pointer(CURRENT),
            previous=self._pointer(PREVIOUS),
            installed=tuple(installed),
        )

    def next_python(self) -> Path | None:
        """The Python of the version to run, if it is not the one running."""
        current = self._pointer(CURRENT)
        if current is None:
            return None
        venv = self.root / current / "venv"
        python = venv / "bin" / "python"
        if not python.exists() or venv.resolve() == self.prefix.resolve():
            return None
        return python

    # --- an archive offered ----------------------------------------------------------------

    async def offer(self, chunks: AsyncIterator[bytes], checksum: str) -> update.Release:
        """Keep an uploaded archive and its checksum if they pass the check (a downgrade is
        only noted: confirming it is the install's); else Refused, with nothing kept."""
        upload = self.root / UPLOAD
        fresh = self.root / f".{UPLOAD}.new"
        shutil.rmtree(fresh, ignore_errors=True)
        fresh.mkdir(parents=True)
        try:
            size = 0
            with (fresh / "archive.tar").open("wb") as file:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > MAX_ARCHIVE:
                        raise update.Refused(
                            f"wrong format: the archive is over {MAX_ARCHIVE >> 20} MB"
                        )
                    file.write(chunk)
            (fresh / "checksum").write_text(checksum)
            release = await asyncio.to_thread(self._check, fresh, True)
        except BaseException:
            shutil.rmtree(fresh, ignore_errors=True)
            raise
        shutil.rmtree(upload, ignore_errors=True)
        fresh.rename(upload)
        return release

    def offered(self) -> update.Release | None:
        """The verdict on the archive waiting to be installed, if one is."""
        try:
            return self._check(self.root / UPLOAD, True)
        except (update.Refused, OSError):
            return None

    def _check(self, where: Path, allow_downgrade: bool) -> update.Release:
        try:
            checksum = (where / "checksum").read_text(errors="replace")
        except FileNotFoundError:
            raise update.Refused("wrong format: no archive was uploaded") from None
        self.root.mkdir(parents=True, exist_ok=True)
        return update.check(
            where / "archive.tar",
            checksum,
            public_key=update.release_public_key(),
            running=self.running,
            free_bytes=shutil.disk_usage(self.root).free,
            allow_downgrade=allow_downgrade,
        )

    # --- install, switch, roll back --------------------------------------------------------

    async def install(self, *, downgrade: bool) -> update.Release:
        """Install the offered archive beside the running version and make it current; the
        caller then restarts the management service. Refused changes nothing."""
        upload = self.root / UPLOAD
        release = await asyncio.to_thread(self._check, upload, downgrade)
        target = self.root / release.version
        fresh = self.root / f".{release.version}.new"
        shutil.rmtree(fresh, ignore_errors=True)
        try:
            await asyncio.to_thread(_unpack, upload / "archive.tar", release, fresh)
            await _install(fresh)
        except BaseException:
            shutil.rmtree(fresh, ignore_errors=True)
            raise
        self._keep_running()
        # A version installed before (and rolled back from) is replaced by this one.
        if target.exists() or target.is_symlink():
            _remove(target)
        # Made beside its place and moved there: its Python finds its packages from where it
        # is, and Balancer runs as `python -m balancer`, never through the scripts' shebangs.
        shutil.rmtree(fresh / "wheels", ignore_errors=True)
        fresh.rename(target)
        (target / ".manifest").rename(target / update.MANIFEST)
        self._switch(release.version)
        shutil.rmtree(upload, ignore_errors=True)
        log.info(
            "software %s installed and made current",
            release.version,
            extra={"event": "software_install", "version": release.version},
        )
        return release

    def rollback(self) -> str:
        """Make the previous version current again; the version it names."""
        previous = self._pointer(PREVIOUS)
        if previous is None or not (self.root / previous / "venv" / "bin" / "python").exists():
            raise update.Refused("no previous version: nothing to roll back to")
        self._switch(previous)
        log.info(
            "software rolled back to %s",
            previous,
            extra={"event": "software_rollback", "version": previous},
        )
        return previous

    def _keep_running(self) -> None:
        """Before the first switch, the environment the appliance was installed in becomes a
        version like any other, so that Roll back can return to it."""
        if self._pointer(CURRENT) is not None:
            return
        base = self.root / self.running
        base.mkdir(parents=True, exist_ok=True)
        if not (base / "venv").is_symlink():
            (base / "venv").symlink_to(self.prefix)
        _point(self.root / CURRENT, self.running)

    def _switch(self, version: str) -> None:
        current = self._pointer(CURRENT)
        if current is not None and current != version:
            _point(self.root / PREVIOUS, current)
        _point(self.root / CURRENT, version)

    def _pointer(self, name: str) -> str | None:
        try:
            return os.readlink(self.root / name)
        except OSError:
            return None

    def _dirs(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return [p for p in self.root.iterdir() if p.is_dir() and update.is_version(p.name)]

    # --- online update ---------------------------------------------------------------------

    def online(self, url: str | None) -> Online | None:
        """The last answer about ``url`` (the URL set now), a version no newer than the running
        one left out: it was installed since."""
        try:
            answer = Online(**json.loads((self.root / ONLINE).read_text()))
        except (OSError, ValueError, TypeError):
            return None
        if url is None or answer.url != url:
            return None
        if answer.available and not _newer(answer.available, self.running):
            return dataclasses.replace(answer, available=None, archive=None)
        return answer

    async def check_online(self, url: str, client: httpx.AsyncClient | None = None) -> Online:
        """Ask ``url`` for the newest release's index and keep the answer (for the notice)."""
        try:
            async with contextlib.AsyncExitStack() as stack:
                if client is None:
                    client = await stack.enter_async_context(
                        httpx.AsyncClient(timeout=ONLINE_TIMEOUT, follow_redirects=False)
                    )
                index = await _fetch(client, url)
            version = _verified(index)
            newer = _newer(version, self.running)
            answer = Online(
                url=url,
                checked=time.time(),
                available=version if newer else None,
                archive=_archive_url(url, index.get("archive")) if newer else None,
            )
        except (httpx.HTTPError, update.Refused, ValueError) as error:
            answer = Online(url=url, checked=time.time(), error=_said(error))
        self.root.mkdir(parents=True, exist_ok=True)
        fresh = self.root / f".{ONLINE}"
        fresh.write_text(json.dumps(asdict(answer)))
        fresh.replace(self.root / ONLINE)
        return answer

    async def watch(self, url_of: Callable[[], str | None]) -> None:
        """Check the configured URL now and every ONLINE_INTERVAL; nothing while none is set."""
        while True:
            url = url_of()
            if url:
                answer = await self.check_online(url)
                if answer.error:
                    log.warning("online update check: %s", answer.error)
                elif answer.available:
                    log.info("Update %s is now available", answer.available)
            await asyncio.sleep(ONLINE_INTERVAL)


def shown(store: Store, installer: Software) -> dict[str, Any]:
    """The versions, the archive waiting to be installed, and the online check: what the API
    answers and the WebUI shows."""
    offered = installer.offered()
    url = store.node_settings().update_url
    online = installer.online(url)
    return {
        **asdict(installer.versions()),
        "offered": said(offered) if offered else None,
        "online": {**(asdict(online) if online else {}), "url": url},
    }


def said(release: update.Release) -> dict[str, Any]:
    return {
        "version": release.version,
        "running": release.running,
        "downgrade": release.downgrade,
        "files": len(release.files),
        "size": release.size,
    }


def save_url(store: Store, url: str | None, author: str) -> None:
    """The node setting update_url; Invalid naming it if it is not an http(s) URL."""
    node = store.node_settings()
    changed = validate.parse_as(NodeSettings, {**node.model_dump(), "update_url": url or None})
    store.save_node_settings(changed, author=author)


def _newer(version: str, than: str) -> bool:
    return update.parse_version(version) > update.parse_version(than)


def _order(version: str) -> tuple[int, ...]:
    return update.parse_version(version) if update.is_version(version) else ()


def _remove(path: Path) -> None:
    if path.is_symlink():
        path.unlink()
    else:
        shutil.rmtree(path)


def _point(link: Path, version: str) -> None:
    """Make ``link`` name ``version`` in one step: a reader sees the old link or the new."""
    fresh = link.with_name(f".{link.name}.new")
    with contextlib.suppress(FileNotFoundError):
        fresh.unlink()
    fresh.symlink_to(version)
    fresh.replace(link)


def _unpack(archive: Path, release: update.Release, into: Path) -> None:
    """The manifest's files (checked names only), and the manifest, into ``into``."""
    into.mkdir(parents=True)
    with tarfile.open(archive, mode="r:") as tar:
        for name in (*release.files, update.MANIFEST):
            stream = tar.extractfile(name)
            assert stream is not None  # the check found each a plain file
            target = into / (".manifest" if name == update.MANIFEST else name)
            target.parent.mkdir(parents=True, exist_ok=True)
            with target.open("wb") as file:
                shutil.copyfileobj(stream, file)


async def _install(where: Path) -> None:
    """A new environment in ``where``/venv from the wheels in ``where``, with no index; uv if
    this machine has it, else venv and pip. Refused with the installer's last line if it
    fails, or if the new Balancer does not even import."""
    venv, wheels = where / "venv", where / "wheels"
    python = getattr(sys, "_base_executable", sys.executable)
    own = [str(p) for p in wheels.glob("balancer-*.whl")]
    requirements = (
        ["-r", str(where / "requirements.txt")] if (where / "requirements.txt").exists() else []
    )
    uv = shutil.which("uv")
    if uv:
        steps = [
            [uv, "--no-config", "venv", "--quiet", "--relocatable", "--python", python, str(venv)],
            [uv, "--no-config", "pip", "install", "--quiet", "--offline", "--no-index",
             "--python", str(venv / "bin" / "python"), "--find-links", str(wheels),
             *requirements, *own],
        ]  # fmt: skip
    else:
        steps = [
            [python, "-m", "venv", str(venv)],
            [str(venv / "bin" / "python"), "-m", "pip", "install", "--isolated", "--quiet",
             "--no-index", "--find-links", str(wheels), *requirements, *own],
        ]  # fmt: skip
    steps.append([str(venv / "bin" / "python"), *ISOLATED, "-c", "import balancer.daemon"])
    for step in steps:
        await _run(step)


async def _run(command: list[str]) -> None:
    process = await asyncio.create_subprocess_exec(
        *command,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), INSTALL_TIMEOUT)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise update.Refused(
            f"install failed: {Path(command[0]).name} took over {INSTALL_TIMEOUT:.0f} s"
        ) from None
    if process.returncode != 0:
        lines = output.decode(errors="replace").strip().splitlines()
        last = lines[-1].strip() if lines else f"exit status {process.returncode}"
        raise update.Refused(f"install failed: {last}")


async def _fetch(client: httpx.AsyncClient, url: str) -> dict[str, object]:
    async with client.stream("GET", url) as response:
        response.raise_for_status()
        body = b""
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > ONLINE_MAX:
                raise ValueError(f"the index at {url} is over {ONLINE_MAX >> 10} KB")
    index = json.loads(body)
    if not isinstance(index, dict) or index.get("format") != INDEX_FORMAT:
        raise update.Refused(f"wrong format: {url} is not a {INDEX_FORMAT} index")
    return index


def _verified(index: dict[str, object]) -> str:
    """The version an index offers, once its manifest's signature verifies with the key this
    Balancer trusts (the index itself travels unsigned)."""
    manifest_text, signature = index.get("manifest"), index.get("signature")
    if not isinstance(manifest_text, str) or not isinstance(signature, str):
        raise update.Refused("wrong format: the index has no signed manifest")
    key = update.release_public_key()
    manifest_bytes = manifest_text.encode()
    try:
        key.verify(base64.b64decode(signature), manifest_bytes)
    except (InvalidSignature, ValueError):
        raise update.Refused("bad signature: the index's manifest does not verify") from None
    manifest = json.loads(manifest_bytes)
    version = manifest.get("version") if isinstance(manifest, dict) else None
    if not isinstance(version, str) or version != index.get("version"):
        raise update.Refused("wrong format: the index's version is not its manifest's")
    update.parse_version(version)
    return version


def _archive_url(url: str, name: object) -> str | None:
    """Where the index says its archive is, if that is a web address: the index is not
    signed, and the page links to it."""
    found = urljoin(url, name) if isinstance(name, str) else ""
    return found if urlsplit(found).scheme in ("http", "https") else None


def _said(error: Exception) -> str:
    if isinstance(error, httpx.HTTPStatusError):
        return f"{error.request.url} answered HTTP {error.response.status_code}"
    if isinstance(error, httpx.HTTPError):
        return f"cannot reach {error.request.url}: {error or type(error).__name__}"
    return str(error)


def index(manifest: bytes, signature: bytes, archive: str) -> dict[str, object]:
    """The online index `make release` writes beside the archive (``latest.json``)."""
    return {
        "format": INDEX_FORMAT,
        "version": json.loads(manifest)["version"],
        "archive": archive,
        "manifest": manifest.decode(),
        "signature": base64.b64encode(signature).decode(),
    }


def execute(python: Path) -> NoReturn:
    """Become the management service of the version ``python`` belongs to, same arguments."""
    os.execv(python, [str(python), *ISOLATED, "-m", "balancer", *sys.argv[1:]])
