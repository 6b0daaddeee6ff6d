"""Fixtures the browser tests share: the guide's setup, and a browser started after it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.appliance import Guide, guide_setup


@pytest.fixture
def guide(tmp_path: Path) -> Iterator[Guide]:
    with guide_setup(tmp_path) as running:
        yield running


@pytest.fixture
def browser(guide: Guide) -> Iterator[Any]:
    """Chromium, started after the appliance and stopped before it (see tests/browser.py)."""
    # Imported here: tests/browser.py skips whoever imports it when Playwright is missing.
    from tests.browser import chromium

    with chromium() as launched:
        yield launched
