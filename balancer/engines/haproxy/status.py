"""The engine's status from HAProxy's statistics, in the same snapshot the built-in engine
fills, with health reasons worded as the built-in engine words them. Pure.

Counters add up every worker still running: the current one and those of earlier reloads that
still relay connections established before the reload. Health is the current worker's.
"""

from __future__ import annotations

import time

from balancer.engines.haproxy.render import FALLBACK, expect_prefix
from balancer.engines.haproxy.runtime import Row
from balancer.health.probes import _snippet
from balancer.model import CheckType, Config, HealthCheck, RealServer, VirtualService
from balancer.model.types import format_ports
from balancer.state import (
    Counters,
    EngineStatus,
    Health,
    RealServerStatus,
    VirtualServiceStatus,
)

Stats = dict[tuple[str, str], Row]
FRONTEND = "FRONTEND"


def engine_status(
    config: Config,
    revision: int | None,
    pid: int,
    started: float,
    workers: list[Stats],
    now: float | None = None,
) -> EngineStatus:
    """``workers``: the current worker's statistics first, then older workers'."""
    now = time.time() if now is None else now
    return EngineStatus(
        engine="haproxy",
        pid=pid,
        started=started,
        revision=revision,
        virtual_services=tuple(_service(vs, workers, now) for vs in config.virtual_services),
    )


def _service(vs: VirtualService, workers: list[Stats], now: float) -> VirtualServiceStatus:
    return VirtualServiceStatus(
        label=vs.label,
        ip=str(vs.ip),
        ports=format_ports(vs.ports),
        counters=_counters(workers, (vs.label, FRONTEND)),
        fallback_connections=_counters(workers, (vs.label, FALLBACK)).active,
        real_servers=tuple(_server(vs, rs, workers, now) for rs in vs.real_servers),
    )


def _server(
    vs: VirtualService, rs: RealServer, workers: list[Stats], now: float
) -> RealServerStatus:
    row = workers[0].get((vs.label, rs.label), {}) if workers else {}
    health, reason = health_of(row, vs, rs)
    changed = _number(row.get("lastchg", ""))
    return RealServerStatus(
        label=rs.label,
        ip=str(rs.ip),
        port=rs.port,
        weight=rs.weight,
        state=rs.state.value,
        health=health,
        reason=reason,
        since=now - changed,
        counters=_counters(workers, (vs.label, rs.label)),
        check_seconds=check_seconds(row),
    )


def check_seconds(row: Row) -> float | None:
    """``check_duration`` is in milliseconds, empty before the first check or without one."""
    text = row.get("check_duration", "")
    return int(text) / 1000 if text.isdigit() else None


def _counters(workers: list[Stats], key: tuple[str, str]) -> Counters:
    rows = [stats[key] for stats in workers if key in stats]
    return Counters(
        active=sum(_number(row.get("scur", "")) for row in rows),
        total=sum(_number(row.get("stot", "")) for row in rows),
        bytes_in=sum(_number(row.get("bin", "")) for row in rows),
        bytes_out=sum(_number(row.get("bout", "")) for row in rows),
    )


def _number(text: str) -> int:
    return int(text) if text.isdigit() else 0


def health_of(row: Row, vs: VirtualService, rs: RealServer) -> tuple[Health, str]:
    """Up or down, and why, from a server's ``show stat`` row."""
    check = vs.health_check
    status = row.get("status", "")
    if check.type is CheckType.NONE:
        return Health.UP, "no check"
    if status.startswith("MAINT"):
        return Health.DOWN, "halted: HAProxy does not check a halted server"
    up = status.startswith(("UP", "DRAIN", "NOLB")) or not status
    return (Health.UP if up else Health.DOWN), reason(row, check, vs.service_port(rs))


def reason(row: Row, check: HealthCheck, port: int) -> str:
    """The last check's verdict in the built-in engine's words, where HAProxy says as much."""
    code = row.get("check_status", "").removeprefix("* ")
    info = row.get("last_chk", "")
    desc = row.get("check_desc", "")
    status = row.get("check_code", "")
    seconds = f"{check.timeout}s"
    if code in ("", "INI"):
        return "not checked yet"
    if code == "L4OK":
        return "connected" if check.type is CheckType.CONNECT else "passed, service port open"
    if code == "L4TOUT":
        return f"connect timeout after {seconds}"
    if code == "L4CON":
        said = "connect refused" if "refused" in info.lower() else f"connect failed: {info or desc}"
        # tcp-check numbers its steps; with a check port of its own, step 2 is the service port.
        return f"service port {port}: {said}" if "at step 2 of tcp-check" in info else said
    if code == "L6TOUT":
        return f"TLS handshake timeout after {seconds}"
    if code == "L6RSP":
        return f"TLS handshake failed: {info or desc}"
    if code == "L7TOUT":
        return f"response timeout after {seconds}"
    if code in ("L7OK", "L7OKC"):
        return (
            f"{check.expect} (HTTP {status})" if check.expect else f"HTTP {status} {info}".strip()
        )
    if code == "L7STS":
        return f"HTTP {status} {info}".strip()
    if (
        code == "L7RSP"
        and check.expect is not None
        and info.startswith(expect_prefix(check.expect))
    ):
        body = info.removeprefix(expect_prefix(check.expect)).encode()
        return expect_prefix(check.expect) + (_snippet(body) or "an empty body")
    if code == "PROCOK":
        return "script passed"
    if code == "PROCERR":
        return f"script exited {status}" if status else "script failed"
    if code == "PROCTOUT":
        return f"script timeout after {seconds}"
    return ": ".join(part for part in (desc, info) if part) or code
