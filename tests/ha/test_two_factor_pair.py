"""Two-factor sign-in across an HA pair (balancer.pair.two_factor): a code or a recovery code
that signed someone in on one node is refused on the other. The two nodes of
tests.ha.test_syncer (real stores on disk, the Primary's sync of users, each node's routes
reached in process), each telling the other with ``Told`` as a paired node does."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from balancer import totp
from balancer.pair.two_factor import Told
from tests.ha.test_syncer import Nodes, paired, until

USER = "loadbalancer"


@asynccontextmanager
async def telling(root: Path) -> AsyncIterator[tuple[Nodes, str, list[str]]]:
    """The pair, with a second factor enrolled on the Primary and copied to the Secondary,
    both nodes telling each other; the secret and the recovery codes."""
    async with paired(root) as nodes:
        primary, secondary = nodes.primary.store, nodes.secondary.store
        secret = totp.new_secret()
        now = time.time()
        codes = totp.enrol(primary, USER, secret, totp.code_at(secret, now), now, author=USER)
        await until("the second factor on the Secondary", lambda: bool(secondary.two_factor(USER)))
        told = [
            Told(primary, nodes.to_secondary, interval=0.05),
            Told(secondary, nodes.to_primary, interval=0.05),
        ]
        for each in told:
            each.start()
        try:
            yield nodes, secret, codes
        finally:
            for each in told:
                await each.stop()


def step_on(nodes: Nodes, which: str) -> int | None:
    store = getattr(nodes, which).store
    steps = {used.user: used.step for used in store.second_factors_used(0).steps}
    return steps.get(USER)


def recovery_left(nodes: Nodes, which: str) -> int:
    found = getattr(nodes, which).store.two_factor(USER)
    assert found is not None
    return len(found.recovery)


def test_a_code_used_on_either_node_is_refused_on_the_other(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with telling(tmp_path) as (nodes, secret, _):
            primary, secondary = nodes.primary.store, nodes.secondary.store
            # The enrolment's code was of now's step: the next one signs in on the Secondary.
            later = time.time() + totp.STEP
            code = totp.code_at(secret, later)
            assert totp.check(secondary, USER, code, later) == "code"
            step = int(later // totp.STEP)
            await until("the Primary told", lambda: step_on(nodes, "primary") == step)
            assert totp.check(primary, USER, code, later) is None
            # And the other way round.
            latest = later + totp.STEP
            code = totp.code_at(secret, latest)
            assert totp.check(primary, USER, code, latest) == "code"
            await until("the Secondary told", lambda: step_on(nodes, "secondary") == step + 1)
            assert totp.check(secondary, USER, code, latest) is None

    asyncio.run(scenario())


def test_a_recovery_code_used_on_the_secondary_is_used_up_on_the_primary(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with telling(tmp_path) as (nodes, _, codes):
            primary, secondary = nodes.primary.store, nodes.secondary.store
            full = totp.RECOVERY_CODES
            # The Primary is away when the code is typed: the Secondary counts it used at once,
            # and tells the Primary once it answers again.
            nodes.to_primary.away = True
            now = time.time()
            assert totp.check(secondary, USER, codes[0], now) == "recovery"
            assert totp.check(secondary, USER, codes[0], now) is None
            assert recovery_left(nodes, "secondary") == full - 1
            await asyncio.sleep(0.3)
            assert recovery_left(nodes, "primary") == full
            nodes.to_primary.away = False
            await until(
                "used up on the Primary", lambda: recovery_left(nodes, "primary") == full - 1
            )
            assert totp.check(primary, USER, codes[0], now) is None
            # The Primary's next copy of the users no longer lists it: the Secondary, which
            # had kept it aside, forgets it, and both list the same codes.
            await until(
                "forgotten on the Secondary",
                lambda: not secondary.second_factors_used(0).recovery,
            )
            assert secondary.two_factor(USER) == primary.two_factor(USER)
            assert totp.check(secondary, USER, codes[0], now) is None
            # A code used on the Primary reaches the Secondary with the users.
            assert totp.check(primary, USER, codes[1], now) == "recovery"
            await until(
                "gone on the Secondary", lambda: recovery_left(nodes, "secondary") == full - 2
            )
            assert totp.check(secondary, USER, codes[1], now) is None

    asyncio.run(scenario())
