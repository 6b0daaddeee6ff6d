"""Python loads this module at start when its directory is on PYTHONPATH, as it is for the
engines ``make sanitize`` starts (see tests/relay/conftest.py): they import the compiled relay
core from the sanitized build that ``BALANCER_SANITIZED`` names, not from the package."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

RELAY = "balancer._relay"


class SanitizedRelay:
    """A finder, ahead of the others, for the one module."""

    @staticmethod
    def find_spec(
        name: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if name != RELAY:
            return None
        location = os.environ["BALANCER_SANITIZED"]
        loader = importlib.machinery.ExtensionFileLoader(name, location)
        return importlib.util.spec_from_file_location(name, location, loader=loader)


if os.environ.get("BALANCER_SANITIZED"):
    sys.meta_path.insert(0, SanitizedRelay)
