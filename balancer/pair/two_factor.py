"""Two-factor sign-in across the pair: a code, or a recovery code, that signed someone in on one
node is refused on the other as well.

Each node keeps what it used (``Store.second_factors_used``): the newest TOTP step per user,
and, on a Secondary, the recovery codes used there, which it may not strike from the users it
keeps for the Primary. Once a second, when that differs from what the peer last took, ``Told``
sends all of it (``POST /api/v1/peer/two-factor``, balancer.api.replica) and the peer takes it
(``Store.learn_second_factors``): a newer step, and on the Primary the recovery codes, used up
there, so that its next copy of the users no longer lists them and the Secondary forgets them.
It is state, not events: a message lost, a peer away or restarted, is made good by the next.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from balancer import totp
from balancer.ha import sync
from balancer.ha.sync import SecondFactorsUsed
from balancer.pair.background import Background
from balancer.pair.link import PeerError
from balancer.pair.syncer import Peer
from balancer.store import Store

log = logging.getLogger(__name__)

TWO_FACTOR = "/api/v1/peer/two-factor"
INTERVAL = 1.0


class Told(Background):
    """Tells the peer, every ``interval`` seconds, what second factors this node used."""

    def __init__(
        self,
        store: Store,
        peer: Peer,
        *,
        interval: float = INTERVAL,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.peer = peer
        self.interval = interval
        self.wall = wall
        self._told: SecondFactorsUsed | None = None  # what the peer took last

    async def tell(self) -> None:
        """Send the peer what it has not yet taken; a peer that does not answer is told again
        the next time (the link says it is away)."""
        # Steps whose codes the peer may still take: DRIFT either side of its now, and one
        # more for its clock being a few seconds off this node's.
        since = int(self.wall() // totp.STEP) - totp.DRIFT - 1
        used = await asyncio.to_thread(self.store.second_factors_used, since)
        if used == self._told or (not used.steps and not used.recovery):
            return
        try:
            await self.peer.call("POST", TWO_FACTOR, sync.to_json(used))
        except PeerError as error:
            log.debug("second factors used here not told to the peer: %s", error)
            return
        self._told = used

    async def _run(self) -> None:
        while True:
            await self.tell()
            await asyncio.sleep(self.interval)
