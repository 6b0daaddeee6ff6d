"""Restart Heartbeat and switchover as an operator asks for them (Maintenance > Restart
Services, the API, ``balancer ha``): done or refused in one line, and audited either way, with
who asked. The API and the WebUI share it, as neither may import the other."""

from __future__ import annotations

from typing import Literal

from balancer.pair.cluster import Cluster, PairError

# The two actions, as the audit names them.
Action = Literal["restart_heartbeat", "switchover"]


async def perform(cluster: Cluster, action: Action, *, author: str) -> str:
    """Do ``action`` on ``cluster``; what happened, in one line, or PairError saying why not."""
    run = cluster.restart_heartbeat if action == "restart_heartbeat" else cluster.switchover
    try:
        async with cluster.operation():
            said = await run()
    except PairError as error:
        cluster.store.audit(author=author, action=action, detail={"refused": str(error)})
        raise
    cluster.store.audit(author=author, action=action, detail={"done": said})
    return said
