"""System Overview as text: the guide's table of virtual services, with each real server."""

from __future__ import annotations

import time
from typing import Any

MARK = {"online": "[ up ]", "drain": "[drain]", "halt": "[halt]", "failed": "[FAIL]"}


def shown(state: str, health: str) -> str:
    """online, drain, halt or failed: the one word the overview colours a real server by."""
    if state != "online":
        return state
    return "online" if health == "up" else "failed"


def service_shown(servers: list[str]) -> str:
    """How the overview colours a virtual service, from its real servers' words: failed if
    none can take a client, degraded if some have failed, else online."""
    if all(word != "online" for word in servers):
        return "failed"
    return "degraded" if "failed" in servers else "online"


def leaves_none_up(servers: dict[str, str], server: str) -> bool:
    """Whether draining or halting ``server`` leaves its virtual service with no real server
    to take new users: it is the only one online and passing. ``servers`` maps each real
    server's label to its word (``shown``)."""
    others = (word for label, word in servers.items() if label != server)
    return servers.get(server) == "online" and all(word != "online" for word in others)


def render(overview: dict[str, Any]) -> str:
    lines = [f"System Overview  {time.strftime('%Y-%m-%d %H:%M:%S %Z')}"]
    engine = overview.get("engine")
    if overview.get("pending"):
        lines.append(
            f"! {len(overview['pending'])} saved change(s) not yet committed "
            f"(revision {overview['head']}; running {overview['applied']}): `balancer commit`"
        )
    if overview.get("engine_error"):
        # The engine's own words: it cannot start, or refuses the applied revision.
        lines.append(f"! engine: {overview['engine_error']}")
    if engine is None:
        return "\n".join(lines)
    relay = f", relay: {engine['relay']}" if engine.get("relay") else ""
    lines.append(
        f"engine {engine['engine']} pid {engine['pid']}, revision {engine['revision']}{relay}"
    )
    lines.append("")
    lines.append(
        f"{'VIRTUAL SERVICE':24} {'IP':>18} {'PORTS':12} {'CONNS':>6} "
        f"{'PROTOCOL':8} {'METHOD':8} MODE"
    )
    for vs in engine["virtual_services"]:
        counters = vs["counters"]
        lines.append(
            f"{vs['label']:24} {vs['ip']:>18} {vs['ports']:12} {counters['active']:>6} "
            f"{'TCP':8} {'Layer 7':8} Proxy"
        )
        for rs in vs["real_servers"]:
            state = shown(rs["state"], rs["health"])
            port = rs["port"] or "-"
            detail = "" if state in ("online", "drain", "halt") else f"  {rs['reason']}"
            lines.append(
                f"  {MARK[state]:8} {rs['label']:16} {rs['ip']:>18}:{port:<6} "
                f"conns {rs['counters']['active']:>4}  total {rs['counters']['total']:>6}  "
                f"weight {rs['weight']:>3}{detail}"
            )
    return "\n".join(lines)
