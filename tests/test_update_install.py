"""Software Update end to end: two releases of this checkout, built as `make release` builds them
(`uv build`'s wheel, the dependencies' wheels, a manifest signed with the test's key), installed
one after the other on a running appliance with the command line, then rolled back in the WebUI
by keyboard, while one TCP connection stays open through the engine and relays bytes between
each step. Each refused update leaves the running version and the software directory as they
were. The online check reads a release's latest.json from a local HTTP server.

Building: the dependencies' wheels are made once per module from the distributions installed in
this virtual environment (their RECORD says which files are theirs), so nothing is downloaded.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import zipfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from packaging.requirements import Requirement

from balancer import release, software, update
from balancer.client import ApiError
from tests import test_update
from tests.appliance import Appliance, appliance, free_port, wait_for
from tests.browser import SCREENSHOTS, chromium, needs_chromium, open_page, playwright, sign_in
from tests.test_maintenance_restart import _echo_server, _listening
from tests.test_webui_keyboard import tab_to

ROOT = Path(__file__).parent.parent
expect = playwright.expect
FIRST, SECOND = "50.0.0", "50.0.1"


@dataclass(frozen=True)
class Releases:
    key: Path  # the public key the appliance trusts (BALANCER_RELEASE_KEY)
    archives: dict[str, Path]
    stranger: Path  # an archive signed by a key the appliance does not trust


def _wheel_name(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name)


def _repack(dist: metadata.Distribution, out: Path) -> Path:
    """An installed distribution as the wheel it was installed from (RECORD written anew)."""
    tags = [line.split(": ", 1)[1] for line in (dist.read_text("WHEEL") or "").splitlines()
            if line.startswith("Tag: ")]  # fmt: skip
    name, version = dist.metadata["Name"], dist.version
    # Every tag the wheel had, as a compressed tag set (py2.py3-none-any).
    parts = [dict.fromkeys(tag.split("-")[i] for tag in tags) for i in range(3)]
    wheel = out / f"{_wheel_name(name)}-{version}-{'-'.join('.'.join(p) for p in parts)}.whl"
    info = f"{_wheel_name(name)}-{version}.dist-info"
    record = []
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for file in dist.files or []:
            parts = file.parts
            if ".." in parts or "__pycache__" in parts or file.suffix == ".pyc":
                continue  # scripts and compiled files: the installer makes its own
            if parts[0].endswith(".dist-info") and parts[-1] in (
                "RECORD", "INSTALLER", "REQUESTED", "direct_url.json", "uv_cache.json"
            ):  # fmt: skip
                continue
            data = Path(str(dist.locate_file(file))).read_bytes()
            arcname = "/".join((info, *parts[1:])) if parts[0].endswith(".dist-info") else str(file)
            archive.writestr(arcname, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            record.append(f"{arcname},sha256={digest.decode()},{len(data)}")
        record.append(f"{info}/RECORD,,")
        archive.writestr(f"{info}/RECORD", "\n".join(record) + "\n")
    return wheel


def _dependencies(wheel: Path) -> list[metadata.Distribution]:
    """The installed distributions the wheel needs, and theirs, as pip would resolve them."""
    with zipfile.ZipFile(wheel) as archive:
        meta = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        wanted = [
            Requirement(line.split(": ", 1)[1])
            for line in archive.read(meta).decode().splitlines()
            if line.startswith("Requires-Dist: ")
        ]
    found: dict[str, metadata.Distribution] = {}
    while wanted:
        requirement = wanted.pop()
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        key = _wheel_name(requirement.name).lower()
        if key in found:
            continue
        dist = metadata.distribution(requirement.name)
        found[key] = dist
        wanted.extend(Requirement(text) for text in dist.requires or [])
    return list(found.values())


def _build_balancer(version: str, work: Path) -> Path:
    """This checkout's wheel as `make release` builds it (uv build: setuptools), as ``version``."""
    source = work / f"source-{version}"
    shutil.copytree(ROOT / "balancer", source / "balancer",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    shutil.copy(ROOT / "README.md", source)
    pyproject = (ROOT / "pyproject.toml").read_text()
    (source / "pyproject.toml").write_text(
        re.sub(r'(?m)^version = ".*"$', f'version = "{version}"', pyproject, count=1)
    )
    uv = shutil.which("uv")
    assert uv is not None, "the release is built with uv, as `make release` does"
    out = work / f"wheels-{version}"
    subprocess.run(
        [uv, "build", "--wheel", "--offline", "--quiet", "--out-dir", str(out), str(source)],
        check=True,
        capture_output=True,
    )
    return next(out.glob("balancer-*.whl"))


@pytest.fixture(scope="module")
def releases(tmp_path_factory: pytest.TempPathFactory) -> Releases:
    work = tmp_path_factory.mktemp("releases")
    key = Ed25519PrivateKey.generate()
    public = work / "release_key.pem"
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    deps = work / "dependencies"
    deps.mkdir()
    archives = {}
    made: dict[str, Path] = {}
    for version in (FIRST, SECOND):
        own = _build_balancer(version, work)
        needed = _dependencies(own)
        # Both releases pin the same dependencies: each wheel is made once.
        wheels = [made.get(d.metadata["Name"]) or _repack(d, deps) for d in needed]
        made.update((d.metadata["Name"], wheel) for d, wheel in zip(needed, wheels, strict=True))
        pins = work / f"requirements-{version}" / "requirements.txt"
        pins.parent.mkdir()
        pins.write_text("".join(f"{d.metadata['Name']}=={d.version}\n" for d in needed))
        archives[version] = release.build([own, *wheels, pins], key, work / f"dist-{version}")
    stranger = release.build([own, pins], Ed25519PrivateKey.generate(), work / "stranger")
    return Releases(public, archives, stranger)


def _checksum(archive: Path) -> str:
    return archive.with_name(archive.name + ".sha256").read_text()


def _offer(box: Appliance, archive: Path, checksum: str | None = None) -> dict[str, object]:
    with box.http() as http:
        answer = http.post(
            "/software/archive",
            params={"checksum": checksum or _checksum(archive)},
            content=archive.read_bytes(),
        )
    return {"status": answer.status_code, **_said(answer.json())}


def _said(body: dict[str, object]) -> dict[str, object]:
    """An error's one reason as "detail", or the answer as it is."""
    detail = body.get("detail")
    if isinstance(detail, list):
        return {"detail": detail[0]["reason"]}
    return body


def _running(box: Appliance, version: str) -> bool:
    with contextlib.suppress(ApiError):
        return bool(box.client.get("/software")["running"] == version)
    return False


def _relays(held: socket.socket, data: bytes) -> None:
    held.sendall(data)
    got = b""
    while len(got) < len(data):
        chunk = held.recv(len(data) - len(got))
        assert chunk, "the connection through the engine was closed"
        got += chunk
    assert got == data


def _software(box: Appliance) -> dict[str, object]:
    """The software directory's names and links, and the running version: what a refusal
    must leave as it was."""
    root = box.data_dir / software.SOFTWARE
    links = {p.name: os.readlink(p) for p in root.iterdir() if p.is_symlink()}
    return {
        "running": box.client.get("/software")["running"],
        "names": sorted(p.name for p in root.iterdir()),
        "links": links,
    }


@pytest.fixture
def box(tmp_path: Path, releases: Releases, monkeypatch: pytest.MonkeyPatch) -> Iterator[Appliance]:
    monkeypatch.setenv(update.KEY_ENV, str(releases.key))
    with appliance(tmp_path) as running:
        yield running


@needs_chromium
def test_an_update_a_second_and_a_roll_back_keep_a_connection_open(
    box: Appliance, releases: Releases
) -> None:
    base = metadata.version("balancer")
    vip = free_port(["127.0.0.1"])
    with _echo_server() as echo:
        server = {"label": "echo", "ip": "127.0.0.1", "port": echo}
        vs = {"label": "Echo", "ip": "127.0.0.1", "ports": str(vip), "real_servers": [server]}
        box.client.post("/virtual-services", vs)
        box.client.post("/commit")
        wait_for("the VIP", lambda: _listening(vip))
        engine, daemon = box.engine_pid(), box.process.pid
        with socket.create_connection(("127.0.0.1", vip), timeout=10) as held:
            _relays(held, b"before any update")
            done = box.cli("update", "install", str(releases.archives[FIRST]))
            assert done.returncode == 0, done.stderr
            assert done.stdout == (
                f"Balancer {FIRST} installed (was {base}); "
                "the management service is restarting into it\n"
            )
            wait_for(f"Balancer {FIRST}", lambda: _running(box, FIRST), 60)
            _relays(held, b"after the first update")
            shown = box.client.get("/software")
            assert (shown["current"], shown["previous"]) == (FIRST, base)
            # The same process, the new version's Python; the same engine.
            assert box.process.poll() is None
            assert box.process.pid == daemon
            command = Path(f"/proc/{daemon}/cmdline").read_bytes().split(b"\0")
            venv = box.data_dir / "software" / FIRST / "venv"
            # Isolated: nothing from the working directory (this checkout) is imported.
            assert command[:4] == [str(venv / "bin" / "python").encode(), b"-I", b"-m", b"balancer"]
            assert box.engine_pid() == engine

            done = box.cli("update", "install", str(releases.archives[SECOND]))
            assert done.returncode == 0, done.stderr
            wait_for(f"Balancer {SECOND}", lambda: _running(box, SECOND), 60)
            _relays(held, b"after the second update" * 1000)
            assert box.client.get("/software")["previous"] == FIRST

            # Refused, each in one line naming its reason, and nothing changes.
            before = _software(box)
            bad = _offer(box, releases.archives[FIRST], "0" * 64)
            assert bad["status"] == 422
            assert str(bad["detail"]).startswith("refused: bad checksum: the archive's SHA-256")
            stranger = _offer(box, releases.stranger)
            assert str(stranger["detail"]).startswith("refused: unknown key: the archive is")
            again = _offer(box, releases.archives[SECOND])
            assert again["detail"] == f"refused: same version: {SECOND} is running already"
            assert _software(box) == before
            older = _offer(box, releases.archives[FIRST])
            assert (older["status"], older["downgrade"]) == (200, True)
            with box.http() as http:
                refused = http.post("/software/install")
            assert refused.status_code == 422
            assert str(_said(refused.json())["detail"]).startswith(
                f"refused: downgrade: {FIRST} is older than the running {SECOND}; confirm"
            )
            after = _software(box)
            assert after == {**before, "names": sorted([*before["names"], "upload"])}  # type: ignore[list-item]
            _relays(held, b"after the refusals")

            _roll_back_in_the_webui(box)
            wait_for(f"Balancer {FIRST} again", lambda: _running(box, FIRST), 60)
            _relays(held, b"after the roll back")
            shown = box.client.get("/software")
            assert (shown["current"], shown["previous"]) == (FIRST, SECOND)
            assert shown["installed"] == [base, FIRST, SECOND]
            assert box.engine_pid() == engine
            status = box.cli("update", "status")
            assert status.stdout.splitlines()[:2] == [f"running: {FIRST}", f"previous: {SECOND}"]
            _online(box, releases)


def _roll_back_in_the_webui(box: Appliance) -> None:
    """Maintenance > Software Update after the refusals: the versions, the older archive
    waiting for its confirmation (the README's picture); then Roll back, by keyboard."""
    with chromium() as browser:
        page = open_page(browser, 1024, 900)
        sign_in(page, box)
        page.goto(box.webui + "maintenance/software")
        expect(page.locator("#running-version")).to_have_text(f"Balancer {SECOND}")
        expect(page.locator("#previous-version")).to_have_text(f"Balancer {FIRST}")
        expect(page.locator("#verdict")).to_contain_text(f"older than the running {SECOND}")
        expect(
            page.get_by_label(f"I confirm the downgrade from {SECOND} to {FIRST}")
        ).to_be_visible()
        # The README's docs/images/software-update.png.
        page.screenshot(path=str(SCREENSHOTS / "software-update.png"), full_page=True)
        tab_to(page, f"Roll back to {FIRST}")
        page.keyboard.press("Enter")
        expect(page.locator("#restarting")).to_contain_text(f"Rolled back to Balancer {FIRST}.")


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *_: object) -> None:
        pass


@contextlib.contextmanager
def _serving(directory: Path) -> Iterator[str]:
    handler = lambda *a: _Quiet(*a, directory=str(directory))  # noqa: E731
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}/"
        finally:
            server.shutdown()
            thread.join(10)


def _online(box: Appliance, releases: Releases) -> None:
    """Running FIRST: the online check finds SECOND in its latest.json, signed; a forged index
    is refused naming its reason; with no URL it is off."""
    published = releases.archives[SECOND].parent
    with _serving(published.parent) as base, box.http() as http:
        assert http.get("/software").json()["online"] == {"url": None}
        url = f"{base}{published.name}/{software.INDEX}"
        assert http.put("/software/online", json={"url": url}).status_code == 200
        answer = http.post("/software/online/check").json()
        assert answer["available"] == SECOND
        assert answer["archive"] == f"{base}{published.name}/balancer-{SECOND}.tar"
        online = http.get("/software").json()["online"]
        assert (online["url"], online["available"], online["error"]) == (url, SECOND, None)
        index = json.loads((published / software.INDEX).read_text())
        forged = {**index, "manifest": index["manifest"].replace(SECOND, "99.0.0"),
                  "version": "99.0.0"}  # fmt: skip
        # The index itself is not signed: where it says the archive is, is shown only if it
        # is a web address.
        scripted = {**index, "archive": "javascript:alert(1)"}
        (published.parent / "scripted.json").write_text(json.dumps(scripted))
        http.put("/software/online", json={"url": f"{base}scripted.json"})
        answer = http.post("/software/online/check").json()
        assert (answer["available"], answer["archive"]) == (SECOND, None)
        (published.parent / "forged.json").write_text(json.dumps(forged))
        http.put("/software/online", json={"url": f"{base}forged.json"})
        answer = http.post("/software/online/check").json()
        assert answer["available"] is None
        assert answer["error"] == "bad signature: the index's manifest does not verify"
        refused = http.put("/software/online", json={"url": "ftp://example.com/latest.json"})
        assert refused.status_code == 422
        assert http.put("/software/online", json={"url": None}).json() == {"url": None}


@pytest.mark.parametrize("case", list(test_update.REFUSALS))
def test_each_refusal_of_the_appliance_names_its_reason_and_keeps_nothing(
    tmp_path: Path, case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """tests/test_update.py's spoiled archives, offered to the appliance's Software: refused in
    one line naming the reason, nothing kept; a downgrade is kept as offered, and refused at
    install until confirmed, with nothing changed."""
    pem = tmp_path / "release_key.pem"
    pem.write_bytes(
        test_update.KEY.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    monkeypatch.setenv(update.KEY_ENV, str(pem))
    spoil, reason = test_update.REFUSALS[case]
    archive = test_update._build(tmp_path)
    options = spoil(archive)
    if "free_bytes" in options:
        usage = shutil.disk_usage(tmp_path)._replace(free=options["free_bytes"])
        monkeypatch.setattr(software.shutil, "disk_usage", lambda _: usage)
    installer = software.Software(
        tmp_path / "appliance", running=str(options.get("running", "0.1.0"))
    )

    async def body() -> AsyncIterator[bytes]:
        yield archive.read_bytes()

    checksum = str(options.get("checksum", _checksum(archive)))
    offered = installer.root / software.UPLOAD
    if case == "downgrade":
        asyncio.run(installer.offer(body(), checksum))
        before = test_update._snapshot(installer.root)
        with pytest.raises(update.Refused) as refused:
            asyncio.run(installer.install(downgrade=False))
        assert test_update._snapshot(installer.root) == before
        assert offered.is_dir()
    else:
        with pytest.raises(update.Refused) as refused:
            asyncio.run(installer.offer(body(), checksum))
        assert test_update._snapshot(installer.root) == {}
    assert str(refused.value).startswith(reason), refused.value
    assert "\n" not in str(refused.value)
    assert installer.versions().current is None


def test_the_online_check_runs_in_the_background_only_once_a_url_is_set(
    tmp_path: Path, releases: Releases, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(update.KEY_ENV, str(releases.key))
    published = releases.archives[SECOND].parent
    installer = software.Software(tmp_path, running=FIRST)
    urls: list[str | None] = [None, None]
    slept: list[float] = []

    async def asleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == len(urls):
            raise asyncio.CancelledError

    monkeypatch.setattr(software.asyncio, "sleep", asleep)
    with _serving(published) as base:
        urls[1] = f"{base}{software.INDEX}"
        with pytest.raises(asyncio.CancelledError):
            asyncio.run(installer.watch(lambda: urls[len(slept)]))
    assert slept == [software.ONLINE_INTERVAL] * 2
    answer = installer.online(urls[1])
    assert answer is not None
    assert answer.available == SECOND
