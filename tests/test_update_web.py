"""Maintenance > Software Update in chromium, by keyboard, on a running appliance: the online
check's URL typed and checked against a release's latest.json on a local HTTP server (the
guide's "Update X is now available", here and on System Overview); archives chosen in the file
dialog opened from the keyboard; a mismatched checksum refused with its reason; a good archive's
verdict; a downgrade's confirmation; and an archive whose wheels do not install refused with
the installer's reason, the running version and the software directory as they were. The
releases are small, of fake wheels (tests/test_update.py's); test_update_install.py installs
real ones."""

from __future__ import annotations

from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from balancer import release, software, update
from tests.appliance import Appliance, appliance
from tests.browser import SCREENSHOTS, chromium, needs_chromium, open_page, playwright, sign_in
from tests.test_update import KEY, _files
from tests.test_update_install import _serving
from tests.test_webui_accessibility import AXE, RUN_AXE, SERIOUS
from tests.test_webui_keyboard import tab_to

pytestmark = needs_chromium
expect = playwright.expect
PAGE = "maintenance/software"


@pytest.fixture
def box(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Appliance]:
    pem = tmp_path / "release_key.pem"
    pem.write_bytes(
        KEY.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    monkeypatch.setenv(update.KEY_ENV, str(pem))
    with appliance(tmp_path) as running:
        yield running


def _choose(page: Any, field: str, path: Path) -> None:
    """Open the file dialog of ``field`` from the keyboard and pick ``path`` in it."""
    tab_to(page, field)
    # Chromium now and then lets a key press go by without opening the dialog: pressed again.
    for _ in range(3):
        try:
            with page.expect_file_chooser(timeout=5_000) as dialog:
                page.keyboard.press("Space")
        except playwright.TimeoutError:
            continue
        dialog.value.set_files(str(path))
        return
    raise AssertionError(f"the file dialog of {field} did not open")


def _upload(page: Any, archive: Path, checksum: Path) -> None:
    _choose(page, "Update archive", archive)
    _choose(page, "Checksum", checksum)
    page.keyboard.press("Tab")  # to Upload and check
    page.keyboard.press("Enter")
    page.wait_for_load_state()


def _software_dir(box: Appliance) -> list[str]:
    root = box.data_dir / software.SOFTWARE
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def test_software_update_by_keyboard(box: Appliance, tmp_path: Path) -> None:
    running = metadata.version("balancer")
    published = tmp_path / "published"
    releases = {}
    for version in ("0.2.0", "0.0.9"):
        (tmp_path / version).mkdir()
        files = _files(tmp_path / version, version)
        releases[version] = release.build(files, KEY, published / f"dist-{version}")
    newer, older = releases["0.2.0"], releases["0.0.9"]
    with _serving(published) as base, chromium() as browser:
        page = open_page(browser, 1024, 900, bypass_csp=True)  # for axe-core
        sign_in(page, box)
        page.goto(box.webui + PAGE)
        expect(page.locator("#running-version")).to_have_text(f"Balancer {running}")
        expect(page.locator("#previous-version")).to_contain_text("none")

        # Online update: the URL typed, then Save and check now.
        tab_to(page, "URL")
        page.keyboard.type(f"{base}dist-0.2.0/{software.INDEX}")
        page.keyboard.press("Tab")  # Save
        page.keyboard.press("Tab")  # Save and check now
        page.keyboard.press("Enter")
        expect(page.locator("#update-available")).to_contain_text("Update 0.2.0 is now available.")
        expect(page.locator("#online-answer")).to_contain_text("Balancer 0.2.0 is available.")

        # The wrong checksum for the archive: refused, nothing kept.
        before = _software_dir(box)
        _upload(page, newer, older.with_name(older.name + ".sha256"))
        expect(page.locator("#refused")).to_contain_text(
            "Refused: bad checksum: the archive's SHA-256 is"
        )
        assert _software_dir(box) == before

        # The right one: the check's verdict, and Install offered.
        _upload(page, newer, newer.with_name(newer.name + ".sha256"))
        expect(page.locator("#verdict")).to_contain_text(
            "The archive passed the check: Balancer 0.2.0, 3 files"
        )
        expect(page.get_by_role("button", name="Install Balancer 0.2.0")).to_be_visible()
        page.screenshot(path=str(SCREENSHOTS / "software-update-offered.png"), full_page=True)
        if AXE.exists():
            page.add_script_tag(path=str(AXE))
            assert page.evaluate(RUN_AXE, list(SERIOUS)) == []

        # Its wheels are not wheels: the installer refuses them, and nothing changed.
        before = _software_dir(box)
        tab_to(page, "Install Balancer 0.2.0")
        page.keyboard.press("Enter")
        expect(page.locator("#refused")).to_contain_text("Refused: install failed:")
        expect(page.locator("#running-version")).to_have_text(f"Balancer {running}")
        assert _software_dir(box) == before
        assert box.client.get("/software")["current"] is None

        # An older archive: Install needs the downgrade confirmed first.
        _upload(page, older, older.with_name(older.name + ".sha256"))
        expect(page.locator("#verdict")).to_contain_text(f"older than the running {running}")
        tab_to(page, "Install Balancer 0.0.9")
        page.keyboard.press("Enter")  # the browser holds the form: the box is not ticked
        confirm = page.get_by_label(f"I confirm the downgrade from {running} to 0.0.9")
        expect(confirm).to_be_focused()
        page.keyboard.press("Space")
        expect(confirm).to_be_checked()

        page.goto(box.webui)
        expect(page.locator("#update-available")).to_contain_text(
            "Update 0.2.0 is now available: see Software Update."
        )
    # Nothing to roll back to yet; the command line says so, and what it knows.
    done = box.cli("update", "rollback")
    assert (done.returncode, done.stderr) == (
        1,
        "error: refused: no previous version: nothing to roll back to\n",
    )
    status = box.cli("update", "status")
    assert status.stdout.splitlines() == [
        f"running: {running}",
        "previous: none",
        "offered: 0.0.9 (a downgrade: install --downgrade)",
        "online update: Update 0.2.0 is now available",
    ]
