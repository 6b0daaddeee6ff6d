"""Health checks against real sockets and processes on 127.0.0.1, and the monitor on fake time."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from balancer.certificates import server_context
from balancer.health import Monitor, Outcome, Pace, Verdict, probe
from balancer.model.health_check import HealthCheck

LOCAL = "127.0.0.1"


def ok(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


PASS = ok(b"PASS")
FAIL = ok(b"FAIL")


@pytest.fixture(scope="session")
def server_tls(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    """A self-signed certificate, as PSM health pages usually have."""
    return server_context(tmp_path_factory.mktemp("tls") / "psm.pem", "psm01.example.test")


@contextlib.asynccontextmanager
async def http_server(
    replies: list[bytes], tls: ssl.SSLContext | None = None, *, hold_open: bool = False
) -> AsyncIterator[tuple[int, list[bytes]]]:
    """Answer each request with the next reply; yields the port and the requests received."""
    requests: list[bytes] = []
    pending = iter(replies)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            requests.append(await reader.readuntil(b"\r\n\r\n"))
            writer.write(next(pending))
            await writer.drain()
            if hold_open:  # like a server that ignores Connection: close
                await reader.read()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    server = await asyncio.start_server(answer, LOCAL, 0, ssl=tls)
    try:
        yield server.sockets[0].getsockname()[1], requests
    finally:
        server.close()
        await server.wait_closed()


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port that refuses connections: bound, so nothing else takes it, but not listening."""
    with socket.socket() as sock:
        sock.bind((LOCAL, 0))
        yield sock.getsockname()[1]


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections (the kernel does) and never says a word."""
    with socket.socket() as sock:
        sock.bind((LOCAL, 0))
        sock.listen(8)
        yield sock.getsockname()[1]


def check(**fields: Any) -> HealthCheck:
    return HealthCheck.model_validate({"timeout": 2.0, **fields})


def run_probe(health_check: HealthCheck, port: int, **where: Any) -> Outcome:
    return asyncio.run(probe(health_check, LOCAL, port, **where))


PSM = {"type": "https", "path": "/psm/api/health", "expect": "PASS"}


def test_https_self_signed_pass_then_fail(server_tls: ssl.SSLContext) -> None:
    async def scenario() -> tuple[Outcome, Outcome, list[bytes]]:
        async with http_server([PASS, FAIL], server_tls) as (port, requests):
            first = await probe(check(**PSM), LOCAL, port)
            second = await probe(check(**PSM), LOCAL, port)
            return first, second, requests

    first, second, requests = asyncio.run(scenario())
    assert first == Outcome(True, "PASS (HTTP 200)")
    assert second == Outcome(False, "expected PASS, got FAIL")
    head = requests[0].split(b"\r\n")
    assert head[0] == b"GET /psm/api/health HTTP/1.1"
    assert b"User-Agent: Balancer-health-check" in head
    assert b"Connection: close" in head


def test_check_port_and_host_header(server_tls: ssl.SSLContext) -> None:
    async def scenario() -> tuple[Outcome, list[bytes], int]:
        async with http_server([PASS], server_tls) as (port, requests):
            # The service port (3389 for PSM) is not where the health page is.
            return await probe(check(**PSM, port=port), LOCAL, 1), requests, port

    outcome, requests, port = asyncio.run(scenario())
    assert outcome.passed
    assert f"Host: 127.0.0.1:{port}".encode() in requests[0].split(b"\r\n")


def test_no_sni_is_sent_to_a_server_known_by_address(server_tls: ssl.SSLContext) -> None:
    names: list[str | None] = []
    server_tls.sni_callback = lambda _socket, name, _context: names.append(name)
    try:

        async def scenario() -> Outcome:
            async with http_server([PASS], server_tls) as (port, _):
                return await probe(check(**PSM), LOCAL, port)

        assert asyncio.run(scenario()).passed
    finally:
        server_tls.sni_callback = None
    assert names == [None]  # the handshake happened, and named no server


def test_plain_http_head() -> None:
    async def scenario() -> tuple[Outcome, list[bytes]]:
        head_reply = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n"
        async with http_server([head_reply]) as (port, requests):
            health_check = check(type="http", method="HEAD", path="/up")
            return await probe(health_check, LOCAL, port), requests

    outcome, requests = asyncio.run(scenario())
    assert outcome == Outcome(True, "HTTP 200 OK")
    assert requests[0].startswith(b"HEAD /up HTTP/1.1\r\n")


def test_non_2xx_fails() -> None:
    async def scenario() -> Outcome:
        reply = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nPASS"
        async with http_server([reply]) as (port, _):
            return await probe(check(type="http", path="/", expect="PASS"), LOCAL, port)

    assert asyncio.run(scenario()) == Outcome(False, "HTTP 503 Service Unavailable")


def test_a_server_that_keeps_the_connection_open_is_judged_without_waiting() -> None:
    async def scenario() -> Outcome:
        async with http_server([PASS], hold_open=True) as (port, _):
            return await probe(check(type="http", path="/", expect="PASS"), LOCAL, port)

    started = time.monotonic()
    assert asyncio.run(scenario()) == Outcome(True, "PASS (HTTP 200)")
    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize(
    "fields",
    [{"type": "connect"}, {"type": "http", "path": "/"}, PSM],
    ids=["connect", "http", "https"],
)
def test_closed_port_is_refused(closed_port: int, fields: dict[str, str]) -> None:
    assert run_probe(check(**fields), closed_port) == Outcome(False, "connect refused")


def test_connect(silent_port: int) -> None:
    assert run_probe(check(type="connect"), silent_port) == Outcome(True, "connected")


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"type": "http", "path": "/"}, "response timeout after 0.3s"),
        (PSM, "TLS handshake timeout after 0.3s"),
    ],
    ids=["http", "https"],
)
def test_a_server_that_never_answers_times_out(
    silent_port: int, fields: dict[str, str], reason: str
) -> None:
    started = time.monotonic()
    assert run_probe(check(**fields, timeout=0.3), silent_port) == Outcome(False, reason)
    assert time.monotonic() - started < 1.0


def test_connect_timeout() -> None:
    # A listener whose backlog is full: the kernel drops further SYNs, so connect() hangs.
    with socket.socket() as listener, socket.socket() as filler:
        listener.bind((LOCAL, 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        filler.connect((LOCAL, port))
        outcome = run_probe(check(type="connect", timeout=0.3), port)
    assert outcome == Outcome(False, "connect timeout after 0.3s")


def test_tls_to_a_server_that_does_not_speak_it() -> None:
    async def scenario() -> Outcome:
        async def blurt(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

        server = await asyncio.start_server(blurt, LOCAL, 0)
        async with server:
            return await probe(check(**PSM), LOCAL, server.sockets[0].getsockname()[1])

    outcome = asyncio.run(scenario())
    assert outcome.passed is False
    assert outcome.reason.startswith("TLS handshake failed: ")


def test_no_check_always_passes(closed_port: int) -> None:
    assert run_probe(check(type="none"), closed_port) == Outcome(True, "no check")


@pytest.mark.parametrize("service_open", [True, False])
def test_also_check_service_port(
    server_tls: ssl.SSLContext, silent_port: int, closed_port: int, service_open: bool
) -> None:
    service_port = silent_port if service_open else closed_port

    async def scenario() -> Outcome:
        async with http_server([PASS], server_tls) as (port, _):
            health_check = check(**PSM, port=port, also_check_service_port=True)
            return await probe(health_check, LOCAL, service_port)

    expected = (
        Outcome(True, "PASS (HTTP 200)")
        if service_open
        else Outcome(False, f"service port {closed_port}: connect refused")
    )
    assert asyncio.run(scenario()) == expected


def test_a_failed_check_skips_the_service_port(closed_port: int, silent_port: int) -> None:
    health_check = check(type="connect", port=closed_port, also_check_service_port=True)
    assert run_probe(health_check, silent_port) == Outcome(False, "connect refused")


def script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "check.sh"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


def test_external_script_gets_haproxy_arguments_and_environment(tmp_path: Path) -> None:
    seen = tmp_path / "seen"
    body = f'echo "$@" "$HAPROXY_SERVER_ADDR:$HAPROXY_SERVER_PORT $BALANCER_SERVER_ADDR" > {seen}\n'
    health_check = check(type="external", script=script(tmp_path, body), port=8443)
    outcome = run_probe(health_check, 3389, vip_ip="127.0.0.9", vip_port=3389)
    assert outcome == Outcome(True, "script passed")
    assert seen.read_text() == "127.0.0.9 3389 127.0.0.1 8443 127.0.0.1:8443 127.0.0.1\n"


def test_external_script_failure_shows_its_output(tmp_path: Path) -> None:
    body = "echo 'RDS is stuck' >&2\nexit 3\n"
    health_check = check(type="external", script=script(tmp_path, body))
    assert run_probe(health_check, 3389) == Outcome(False, "script exited 3: RDS is stuck")


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie is dead, just not yet reaped by whoever adopted it


def test_external_script_is_killed_on_timeout(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    body = f"sleep 30 &\necho $! > {pids}\nsleep 30\n"  # hangs, and so does its child
    health_check = check(type="external", script=script(tmp_path, body), timeout=0.3)
    started = time.monotonic()
    assert run_probe(health_check, 3389) == Outcome(False, "script timed out after 0.3s")
    assert time.monotonic() - started < 2.0
    child = int(pids.read_text())
    for _ in range(100):
        if not running(child):
            break
        time.sleep(0.01)
    assert not running(child)


def test_external_script_is_judged_when_it_exits_even_if_its_child_lingers(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    body = f"sleep 30 &\necho $! > {pids}\necho up\nexit 0\n"
    health_check = check(type="external", script=script(tmp_path, body))
    try:
        started = time.monotonic()
        assert run_probe(health_check, 3389) == Outcome(True, "script passed")
        assert time.monotonic() - started < 1.0
    finally:
        os.kill(int(pids.read_text()), signal.SIGKILL)


def test_external_script_not_runnable(tmp_path: Path) -> None:
    path = tmp_path / "check.sh"
    path.write_text("#!/bin/sh\nexit 0\n")
    health_check = check(type="external", script=str(path))
    assert run_probe(health_check, 3389) == Outcome(False, "script not runnable: permission denied")


def parked() -> None:
    """What a timer that is never to fire calls: nothing."""


class Fake:
    """A probe that plays results ("P"/"F") in order, a timer that fires at once, and a record
    of what the monitor did, so a run of many intervals takes milliseconds."""

    def __init__(self, results: str) -> None:
        self.results = results
        self.calls: list[tuple[Any, ...]] = []
        self.events: list[str] = []
        self.changes: list[tuple[int, bool, str]] = []  # (checks so far, up, reason)
        self.finished = asyncio.Event()

    async def probe(self, *args: Any) -> Outcome:
        self.calls.append(args)
        self.events.append("probe")
        if self.results[len(self.calls) - 1] == "P":
            return Outcome(True, "PASS (HTTP 200)")
        return Outcome(False, "expected PASS, got FAIL")

    def later(self, seconds: float, callback: Callable[[], None]) -> asyncio.Handle:
        self.events.append(f"sleep {seconds}")
        if len(self.calls) == len(self.results):
            self.finished.set()
            callback = parked  # the last timer never fires: stop() cancels it
        return asyncio.get_running_loop().call_soon(callback)

    def on_change(self, verdict: Verdict, outcome: Outcome) -> None:
        self.changes.append((len(self.calls), verdict.up, outcome.reason))


def watch(fake: Fake) -> Monitor:
    """Run a monitor (PSM's published interval 4 s, rise 2, fall 3) through ``fake``'s results."""
    health_check = check(**PSM, interval=4.0, rise=2, fall=3)

    async def scenario() -> Monitor:
        monitor = Monitor(
            health_check,
            LOCAL,
            3389,
            fake.on_change,
            vip_ip="127.0.0.9",
            vip_port=3389,
            later=fake.later,
            probe=fake.probe,
        )
        monitor.start()
        await asyncio.wait_for(fake.finished.wait(), 5)
        await monitor.stop()
        return monitor

    return asyncio.run(scenario())


def test_fails_after_three_checks_returns_after_two() -> None:
    fake = Fake("PFFFPPP")
    started = time.monotonic()
    monitor = watch(fake)
    assert time.monotonic() - started < 1.0  # seven 4-second intervals, none waited for
    assert fake.changes == [
        (4, False, "expected PASS, got FAIL"),
        (6, True, "PASS (HTTP 200)"),
    ]
    assert monitor.verdict == Verdict(up=True, health=4, rise=2, fall=3)
    assert monitor.last == Outcome(True, "PASS (HTTP 200)")


def test_a_monitor_says_how_long_its_last_check_took() -> None:
    fake = Fake("PP")
    plain = fake.probe

    async def slow(*args: Any) -> Outcome:
        await asyncio.sleep(0.05)
        return await plain(*args)

    fake.probe = slow  # type: ignore[method-assign]
    monitor = watch(fake)
    assert monitor.took is not None
    assert monitor.took >= 0.05


def test_first_check_at_once_then_every_interval() -> None:
    fake = Fake("PPP")
    watch(fake)
    assert fake.events == ["probe", "sleep 4.0"] * 3
    assert fake.calls[0][1:] == (LOCAL, 3389, "127.0.0.9", 3389)


def test_a_server_dead_at_start_is_down_after_one_check() -> None:
    fake = Fake("FFP")
    monitor = watch(fake)
    assert fake.changes == [(1, False, "expected PASS, got FAIL")]
    assert not monitor.verdict.up  # one pass is not enough to come back


def test_flapping_keeps_a_server_up() -> None:
    fake = Fake("PFFPFFPFF")
    monitor = watch(fake)
    assert fake.changes == []
    assert monitor.verdict.up


def test_no_check_never_probes() -> None:
    fake = Fake("")

    async def scenario() -> Monitor:
        monitor = Monitor(check(type="none"), LOCAL, 3389, fake.on_change, probe=fake.probe)
        monitor.start()
        await asyncio.sleep(0)
        await monitor.stop()
        return monitor

    monitor = asyncio.run(scenario())
    assert fake.calls == []
    assert monitor.verdict.up
    assert monitor.last == Outcome(True, "no check")


def test_last_is_none_before_the_first_check() -> None:
    monitor = Monitor(check(**PSM), LOCAL, 3389, Fake("").on_change)
    assert monitor.last is None
    assert monitor.verdict.up


def test_start_twice_is_a_mistake() -> None:
    fake = Fake("P")

    async def scenario() -> None:
        monitor = Monitor(
            check(**PSM), LOCAL, 3389, fake.on_change, later=fake.later, probe=fake.probe
        )
        monitor.start()
        try:
            with pytest.raises(RuntimeError, match="already"):
                monitor.start()
        finally:
            await monitor.stop()

    asyncio.run(scenario())


def test_a_broken_owner_callback_is_logged_and_raised_by_stop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(verdict: Verdict, outcome: Outcome) -> None:
        raise KeyError("no such real server")

    async def scenario() -> None:
        fake = Fake("F")
        monitor = Monitor(check(**PSM), LOCAL, 3389, broken, later=fake.later, probe=fake.probe)
        monitor.start()
        for _ in range(5):
            await asyncio.sleep(0)
        with pytest.raises(KeyError):
            await monitor.stop()

    asyncio.run(scenario())
    assert "health checks of real server 127.0.0.1:3389 stopped" in caplog.text


def test_monitor_with_the_real_probe(closed_port: int) -> None:
    fake = Fake("")
    seen: list[Outcome] = []

    def later(seconds: float, callback: Callable[[], None]) -> asyncio.Handle:
        fake.finished.set()
        return asyncio.get_running_loop().call_soon(parked)

    async def scenario() -> None:
        def on_change(verdict: Verdict, outcome: Outcome) -> None:
            seen.append(outcome)

        monitor = Monitor(check(type="connect"), LOCAL, closed_port, on_change, later=later)
        monitor.start()
        await asyncio.wait_for(fake.finished.wait(), 5)
        await monitor.stop()

    asyncio.run(scenario())
    assert seen == [Outcome(False, "connect refused")]


def test_pace_spaces_first_checks_started_together() -> None:
    async def delays() -> list[float]:
        pace = Pace(rate=100.0)
        return [pace.delay() for _ in range(3)]

    first, second, third = asyncio.run(delays())
    assert first == 0.0
    assert second == pytest.approx(0.01, abs=0.005)
    assert third == pytest.approx(0.02, abs=0.005)


def test_a_paced_monitor_waits_its_turn_before_its_first_check() -> None:
    fake = Fake("P")

    async def scenario() -> None:
        pace = Pace(rate=10.0)
        pace.delay()  # another monitor took the first turn
        monitor = Monitor(
            check(**PSM), LOCAL, 3389, fake.on_change, later=fake.later, probe=fake.probe, pace=pace
        )
        monitor.start()
        await asyncio.wait_for(fake.finished.wait(), 5)
        await monitor.stop()

    asyncio.run(scenario())
    waited, *rest = fake.events
    assert float(waited.split()[1]) == pytest.approx(0.1, abs=0.05)
    assert rest == ["probe", "sleep 4.0"]


def test_a_connect_check_closes_with_a_reset() -> None:
    """As HAProxy's do: no TIME_WAIT left on the checking side for each check."""
    with socket.socket() as listener:
        listener.bind((LOCAL, 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        assert run_probe(check(type="connect"), port) == Outcome(True, "connected")
        accepted, _ = listener.accept()
        with accepted, pytest.raises(ConnectionResetError):
            accepted.recv(1)
