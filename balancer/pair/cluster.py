"""This node's place in an HA pair at run time: standalone, or one of two.

The daemon makes one ``Cluster`` for each run of the management service and the API and the
WebUI read it. Standalone it does nothing. Paired, it runs the node's keepalived, hears the peer,
and keeps the Secondary in step with the Primary; pairing and Break Clustered Pair start and
stop all of that without a restart.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from balancer.controller import Controller
from balancer.model import Pair
from balancer.pair.status import NodeView, PairView
from balancer.pair.syncer import Syncer
from balancer.store import Store


class Cluster:
    def __init__(
        self,
        store: Store,
        controller: Controller,
        data_dir: Path,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.controller = controller
        self.data_dir = data_dir
        self.clock = clock
        # The Primary's sync with its Secondary while it runs; None otherwise.
        self.syncer: Syncer | None = None

    @property
    def pair(self) -> Pair | None:
        """This node's part in the pair, None while it stands alone."""
        return self.store.node_settings().pair

    async def start(self) -> None:
        """Run what this node's part in the pair needs; nothing when it stands alone."""

    async def stop(self) -> None:
        """Stop hearing the peer and syncing. keepalived is not stopped here: a restart of the
        management service must not move the floating IPs (``release`` does, when the node
        goes down)."""

    def view(self) -> PairView | None:
        """The pair as this node sees it, None while it stands alone."""
        pair = self.pair
        if pair is None:
            return None
        return PairView(this=self.this(pair), peer=None, link=None)

    def this(self, pair: Pair) -> NodeView:
        applied = self.store.applied()
        return NodeView(
            address=str(pair.local_address),
            role=pair.role,
            state="unknown",
            revision=None if applied is None else applied.revision,
            engine=self.controller.engine.name,
            engine_error=self.controller.engine_error,
            sync="owner" if pair.role == "primary" else "unknown",
        )
