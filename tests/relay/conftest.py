"""Fixtures of the relay suite: one started engine per relay and test module, shared by the
module's tests (each test applies its own services, which replace the last test's).

The relays: the built-in engine's Python relay and its compiled core, each forced by
``BALANCER_RELAY`` (a forced core that cannot load is an engine fault, never a silent
fallback), and HAProxy. The core's parameter is skipped, with the reason, while
``balancer._relay`` does not import or the engine does not choose it yet.

``make sanitize`` runs the core's parameter alone on a build of it with AddressSanitizer and
UndefinedBehaviorSanitizer: ``BALANCER_SANITIZED`` names that build, ``SANITIZER_PRELOAD`` the
sanitizer's runtime, which the engine process is started with (see sanitized/sitecustomize.py).
There a core that does not run fails rather than skips."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from balancer.engines import Engine
from balancer.engines.builtin import BuiltinEngine
from balancer.engines.haproxy import HaproxyEngine
from tests.engine import Revisions
from tests.engine.conftest import ATTACH_TIMEOUT, HAPROXY_MISSING, STOP_TIMEOUT, net, tls
from tests.engine.conftest import pytest_pyfunc_call as pytest_pyfunc_call

__all__ = ["engine", "net", "pytest_pyfunc_call", "revisions", "runner", "tls"]

SANITIZED = os.environ.get("BALANCER_SANITIZED")


def core_missing() -> str | None:
    """Why the compiled relay core cannot run here; None if it imports."""
    if SANITIZED:
        return None  # the engine imports the sanitized build, and must
    try:
        importlib.import_module("balancer._relay")
    except ImportError as error:
        return f"the compiled relay core does not import ({error}); `make setup` builds it"
    return None


RELAYS = [
    pytest.param("python"),
    pytest.param(
        "core", marks=pytest.mark.skipif(core_missing() is not None, reason=str(core_missing()))
    ),
    pytest.param(
        "haproxy",
        marks=pytest.mark.skipif(
            HAPROXY_MISSING, reason="HAProxy is not installed (make test installs it)"
        ),
    ),
]
SAID = {"python": "relay: Python", "core": "relay: compiled core"}


@pytest.fixture(scope="module")
def runner() -> Iterator[asyncio.Runner]:
    """One event loop per module: the module's engine is attached and stopped on it."""
    with asyncio.Runner() as runner:
        yield runner


def environment(relay: str) -> dict[str, str]:
    """What the engine process of ``relay`` is started with, beyond this process's own."""
    if relay == "haproxy":
        return {}
    if relay == "core" and SANITIZED:
        here = str(Path(__file__).parent / "sanitized")
        preload = os.environ["SANITIZER_PRELOAD"]
        return {"BALANCER_RELAY": relay, "LD_PRELOAD": preload, "PYTHONPATH": here}
    return {"BALANCER_RELAY": relay}


@contextlib.contextmanager
def started_with(variables: dict[str, str]) -> Iterator[None]:
    """``variables`` set meanwhile: the engine process started meanwhile inherits them, and
    so does every worker it starts again later."""
    before = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                del os.environ[name]
            else:
                os.environ[name] = value


def relay_said(data_dir: Path) -> str | None:
    """What the engine's log said at its start about the relay it runs, if anything."""
    for line in (data_dir / "logs" / "engine.log").read_text().splitlines():
        message = str(json.loads(line).get("message", ""))
        if message.startswith("relay: "):
            return message
    return None


@pytest.fixture(scope="module", params=RELAYS)
def engine(
    request: pytest.FixtureRequest,
    runner: asyncio.Runner,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Engine]:
    """A started engine running ``request.param``'s relay, for every test of the module."""
    relay: str = request.param
    # A short directory: the engine's control socket path must fit in sun_path (108 bytes).
    data_dir = tmp_path_factory.mktemp(relay)
    engine: Engine = HaproxyEngine(data_dir) if relay == "haproxy" else BuiltinEngine(data_dir)
    try:
        with started_with(environment(relay)):
            runner.run(asyncio.wait_for(engine.attach(), ATTACH_TIMEOUT))
        said = None if relay == "haproxy" else relay_said(data_dir)
        if said is not None:
            assert said.startswith(SAID[relay]), f"BALANCER_RELAY={relay} ran {said!r}"
        elif relay == "core":  # an engine with only the Python relay says nothing
            why = "the built-in engine does not choose its relay yet (BALANCER_RELAY)"
            if SANITIZED:
                pytest.fail(why)
            pytest.skip(why)
        if relay == "core" and SANITIZED:
            pid = runner.run(engine.status()).pid
            maps = Path(f"/proc/{pid}/maps").read_text()
            assert SANITIZED in maps, f"the engine did not load {SANITIZED}"
        yield engine
    finally:
        runner.run(asyncio.wait_for(engine.stop(), STOP_TIMEOUT))


@pytest.fixture(scope="module")
def revisions(engine: Engine) -> Revisions:
    """The module's revisions of its engine: each ``apply`` runs only the services given."""
    return Revisions(engine)
