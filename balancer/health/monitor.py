"""The I/O edge of health checking: run one check against a real server, and watch one over time.

Judging replies and counting rise/fall are pure (``probes``, ``verdict``); this module only
connects, sends, reads, runs scripts and waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import math
import os
import signal
import socket
import ssl
import struct
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from ipaddress import ip_address
from typing import Protocol

from balancer.health.probes import (
    Outcome,
    http_request,
    judge_exit,
    judge_http,
    response_complete,
)
from balancer.health.verdict import Verdict, apply, initial
from balancer.model.health_check import CheckType, HealthCheck

log = logging.getLogger(__name__)

READ_LIMIT = 64 * 1024  # a health page is small; anything past this is not read
SCRIPT_OUTPUT_LIMIT = 4096  # only the start of a script's output is quoted in a reason
START_RATE = 2000.0  # first checks a second, when many servers start at once (see Pace)

Probe = Callable[[HealthCheck, str, int, str, int], Awaitable[Outcome]]


class Cancellable(Protocol):
    def cancel(self) -> None: ...


Later = Callable[[float, Callable[[], None]], Cancellable]  # call this in so many seconds


def _call_later(seconds: float, callback: Callable[[], None]) -> Cancellable:
    return asyncio.get_running_loop().call_later(seconds, callback)


OnChange = Callable[[Verdict, Outcome], None]


CONNECTED = Outcome(True, "connected")  # the same outcome each time: nothing to allocate
NO_LINGER = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 seconds: close() sends a reset


class _Failed(Exception):
    """A check failed, for the reason in the message; never leaves this module."""


async def probe(
    check: HealthCheck, ip: str, service_port: int, vip_ip: str = "", vip_port: int = 0
) -> Outcome:
    """Run one check against ``ip``; every failure, timeouts included, is an Outcome."""
    if check.type is CheckType.NONE:
        return Outcome(True, "no check")
    deadline = _Deadline(asyncio.get_running_loop().time() + check.timeout, check.timeout)
    port = check.port_for(service_port)
    try:
        if check.type is CheckType.CONNECT:
            outcome = await _connect_check(ip, port, deadline)
        elif check.type is CheckType.EXTERNAL:
            assert check.script is not None  # the model requires a script for this type
            outcome = await _script_check(check.script, vip_ip, vip_port, ip, port, deadline)
        else:
            outcome = await _http_check(check, ip, port, deadline)
    except _Failed as failure:
        return Outcome(False, str(failure))
    if outcome.passed and check.also_check_service_port:
        try:
            await _connect_check(ip, service_port, deadline)
        except _Failed as failure:
            return Outcome(False, f"service port {service_port}: {failure}")
    return outcome


@dataclass(frozen=True)
class _Deadline:
    """When the whole check must be over; each step under it says what ran out of time."""

    when: float  # on the event loop's clock
    seconds: float  # the check's timeout, as the operator set it

    @contextlib.asynccontextmanager
    async def step(self, what: str) -> AsyncIterator[None]:
        try:
            async with asyncio.timeout_at(self.when):
                yield
        except TimeoutError:
            raise _Failed(f"{what} after {self.seconds}s") from None


async def _connect(
    ip: str, port: int, deadline: _Deadline
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    try:
        async with deadline.step("connect timeout"):
            return await asyncio.open_connection(ip, port)
    except ConnectionRefusedError:
        raise _Failed("connect refused") from None
    except OSError as error:
        raise _Failed(f"connect failed: {_os_reason(error)}") from None


def _drop(writer: asyncio.StreamWriter) -> None:
    # Abort rather than close: a graceful TLS close waits for the server's close_notify, which a
    # sick server may never send, and the check has its answer already.
    writer.transport.abort()


async def _connect_check(ip: str, port: int, deadline: _Deadline) -> Outcome:
    """Connect and close. A bare non-blocking socket, not a transport with its streams and a
    timeout scope: at a thousand checks a second what a check allocates is most of its cost."""
    loop = asyncio.get_running_loop()
    try:
        sock = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM)
    except OSError as error:
        raise _Failed(f"connect failed: {_os_reason(error)}") from None
    with sock:
        sock.setblocking(False)
        failed = sock.connect_ex((ip, port))
        if failed == errno.EINPROGRESS:
            if not await _writable(loop, sock.fileno(), deadline.when):
                raise _Failed(f"connect timeout after {deadline.seconds}s")
            failed = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if not failed:
            # Closed with a reset, as HAProxy closes its checks: no TIME_WAIT left behind for
            # each check, whose ports every later connect to the server must search past.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, NO_LINGER)
    if failed == errno.ECONNREFUSED:
        raise _Failed("connect refused")
    if failed:
        raise _Failed(f"connect failed: {os.strerror(failed).lower()}")
    return CONNECTED


async def _writable(loop: asyncio.AbstractEventLoop, fd: int, when: float) -> bool:
    """Whether ``fd`` became writable (its connect ended, either way) before ``when``."""
    ready: asyncio.Future[bool] = loop.create_future()
    loop.add_writer(fd, _settle, ready, True)
    timer = loop.call_at(when, _settle, ready, False)
    try:
        return await ready
    finally:
        loop.remove_writer(fd)
        timer.cancel()


def _settle(future: asyncio.Future[bool], value: bool) -> None:
    if not future.done():
        future.set_result(value)


async def _http_check(check: HealthCheck, ip: str, port: int, deadline: _Deadline) -> Outcome:
    assert check.path is not None  # the model requires a path for HTTP and HTTPS
    tls = check.type is CheckType.HTTPS
    # The model admits only paths HTTP can carry, so building the request cannot fail here.
    request = http_request(check.method, check.path, _host(ip, port, tls))
    reader, writer = await _connect(ip, port, deadline)
    try:
        if tls:
            await _handshake(writer, deadline)
        writer.write(request)
        data = await _read_response(reader, check.method, deadline)
    finally:
        _drop(writer)
    return judge_http(data, check.method, check.expect)


async def _handshake(writer: asyncio.StreamWriter, deadline: _Deadline) -> None:
    # PSM health pages usually sit behind self-signed certificates: check that the server speaks
    # TLS, not who it is. No SNI either, since the server is known only by its address.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        async with deadline.step("TLS handshake timeout"):
            await writer.start_tls(context)
    except ssl.SSLError as error:
        raise _Failed(f"TLS handshake failed: {_tls_reason(error)}") from None
    except OSError as error:
        raise _Failed(f"TLS handshake failed: {_os_reason(error)}") from None


async def _read_response(reader: asyncio.StreamReader, method: str, deadline: _Deadline) -> bytes:
    """Read until EOF, a whole response (for servers that ignore Connection: close) or the limit."""
    data = b""
    async with deadline.step("response timeout"):
        while len(data) < READ_LIMIT and not response_complete(data, method):
            try:
                chunk = await reader.read(READ_LIMIT - len(data))
            except OSError as error:
                if not data:
                    raise _Failed(f"no response: {_os_reason(error)}") from None
                break  # judge what arrived, as if the connection had closed
            if not chunk:
                break
            data += chunk
    return data


async def _script_check(
    script: str, vip_ip: str, vip_port: int, ip: str, port: int, deadline: _Deadline
) -> Outcome:
    """Run an external check the way HAProxy's external-check runs it, so its scripts work here."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HAPROXY_PROXY_ADDR": vip_ip,
        "HAPROXY_PROXY_PORT": str(vip_port),
        "HAPROXY_SERVER_ADDR": ip,
        "HAPROXY_SERVER_PORT": str(port),
        "BALANCER_SERVER_ADDR": ip,
        "BALANCER_SERVER_PORT": str(port),
    }
    # Output goes to a file, not a pipe: the exit status is the verdict, as in HAProxy, and a
    # child the script leaves running must not keep the check waiting for the pipe to close.
    with tempfile.TemporaryFile() as output:
        try:
            process = await asyncio.create_subprocess_exec(
                script,
                vip_ip,
                str(vip_port),
                ip,
                str(port),
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=output,
                stderr=asyncio.subprocess.STDOUT,
                # Its own process group, so that a timeout also kills what the script started.
                start_new_session=True,
            )
        except OSError as error:
            raise _Failed(f"script not runnable: {_os_reason(error)}") from None
        try:
            async with deadline.step("script timed out"):
                returncode = await process.wait()
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
            raise
        output.seek(0)
        return judge_exit(returncode, output.read(SCRIPT_OUTPUT_LIMIT))


def _host(ip: str, port: int, tls: bool) -> str:
    return _bracket(ip) if port == (443 if tls else 80) else f"{_bracket(ip)}:{port}"


def _bracket(ip: str) -> str:
    return f"[{ip}]" if ip_address(ip).version == 6 else ip


def _os_reason(error: OSError) -> str:
    if isinstance(error, ConnectionRefusedError):
        return "refused"
    return (error.strerror or str(error) or type(error).__name__).lower()


def _tls_reason(error: ssl.SSLError) -> str:
    # "[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)" -> "wrong version number"
    reason = getattr(error, "reason", None)
    return reason.lower().replace("_", " ") if reason else str(error)


class Pace:
    """Spaces out the first checks of monitors started together, at most ``rate`` a second:
    a revision of 10,000 real servers starts its checks over 5 s rather than opening 10,000
    connections at once, whose memory the process would keep. Each monitor's later checks
    follow its first, so they stay spread out. A few servers start as good as at once."""

    def __init__(self, rate: float = START_RATE) -> None:
        self._gap = 1 / rate
        self._next = -math.inf

    def delay(self) -> float:
        """Seconds until the next first check may run."""
        now = asyncio.get_running_loop().time()
        self._next = max(now, self._next + self._gap)
        return self._next - now


class Monitor:
    """Watches one real server: checks it now (or when ``pace`` lets it) and then every
    interval, and reports flips."""

    # Ten thousand of them in a large configuration: no __dict__ each.
    __slots__ = (
        "_check",
        "_last",
        "_later",
        "_on_change",
        "_pace",
        "_probe",
        "_target",
        "_task",
        "_timer",
        "_took",
        "_verdict",
    )

    def __init__(
        self,
        check: HealthCheck,
        ip: str,
        service_port: int,
        on_change: OnChange,
        *,
        vip_ip: str = "",
        vip_port: int = 0,
        later: Later = _call_later,
        probe: Probe = probe,
        pace: Pace | None = None,
    ) -> None:
        self._check = check
        self._target = (ip, service_port, vip_ip, vip_port)
        self._on_change = on_change
        self._later = later
        self._probe = probe
        self._verdict = initial(check.rise, check.fall)
        self._last = Outcome(True, "no check") if check.type is CheckType.NONE else None
        self._took: float | None = None
        self._task: asyncio.Task[None] | None = None  # the check running, or the last one
        self._timer: Cancellable | None = None  # the next check
        self._pace = pace

    @property
    def verdict(self) -> Verdict:
        return self._verdict

    @property
    def last(self) -> Outcome | None:
        """The last check's outcome; None until the first check has finished."""
        return self._last

    @property
    def took(self) -> float | None:
        """Seconds the last check took (its latency, a timeout's whole wait); None before one."""
        return self._took

    def start(self) -> None:
        if self._task is not None or self._timer is not None:
            raise RuntimeError("this monitor has already been started")
        if self._check.type is not CheckType.NONE:
            first = self._pace.delay() if self._pace is not None else 0.0
            if first > 0:
                self._timer = self._later(first, self._go)
            else:
                self._go()

    async def stop(self) -> None:
        """Cancel the checks and wait for them to end; raises what broke them, if anything did."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        task = self._task
        if task is None:
            return
        task.cancel()
        # wait() rather than awaiting the task: a cancel of stop() itself must not be swallowed.
        await asyncio.wait([task])
        if not task.cancelled():
            task.result()

    # Between checks a monitor is a timer, not a task waiting: a task, its coroutine and its
    # sleep's future for each of 10,000 real servers took 15 MiB. A task lives for one check.
    def _go(self) -> None:
        self._timer = None
        self._task = asyncio.get_running_loop().create_task(self._once())
        self._task.add_done_callback(self._ended)

    async def _once(self) -> None:
        ip, service_port, vip_ip, vip_port = self._target
        loop = asyncio.get_running_loop()
        began = loop.time()
        outcome = await self._probe(self._check, ip, service_port, vip_ip, vip_port)
        self._took = loop.time() - began
        self._record(outcome)
        self._timer = self._later(self._check.interval, self._go)

    def _ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if error is None:
            if self._task is task:
                self._task = None  # half a kilobyte: not kept until the next check
            return
        # Said at once: until its owner stops it, a dead monitor leaves a stale verdict standing.
        ip, port = self._target[:2]
        log.error("health checks of real server %s:%s stopped", _bracket(ip), port, exc_info=error)

    def _record(self, outcome: Outcome) -> None:
        self._verdict, changed = apply(self._verdict, outcome.passed)
        self._last = outcome
        # The owner logs the change: it knows the service and server by their labels.
        if changed:
            self._on_change(self._verdict, outcome)
