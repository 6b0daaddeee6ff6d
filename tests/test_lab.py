"""The lab: RDP's bytes, the stand-ins' rules, and lab servers on real sockets.

Servers bind random 127.94.x.y addresses with ports chosen by the system, so these tests do not
clash with a lab or another test running on the same machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import random
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any, cast

import h11
import pytest
import uvloop
from cryptography import x509
from cryptography.x509.oid import NameOID

from balancer import control
from balancer.certificates import certificate
from balancer.lab import LabServerSpec, default_specs, lab_status, rdp, run_lab, set_mode, stop_lab
from balancer.lab import run as run_process
from balancer.lab.connections import Connections
from balancer.lab.https_service import answer
from balancer.lab.rdp_service import Opening, RdpService

Status = dict[str, Any]
Run = Callable[[Coroutine[Any, Any, Any]], Any]

# [MS-RDPBCGR] 4.1.1 and 4.1.2: a Connection Request for user "eltons" and a Connection Confirm.
SPEC_REQUEST = bytes.fromhex(
    "0300002c27e00000000000436f6f6b69653a206d737473686173683d656c746f6e730d0a0100080000000000"
)
SPEC_CONFIRM = bytes.fromhex("030000130ed000001234000200080000000000")


# RDP's bytes


def test_connection_request_is_the_specifications_example() -> None:
    assert rdp.connection_request("eltons", rdp.PROTOCOL_RDP) == SPEC_REQUEST
    assert rdp.parse_connection_request(SPEC_REQUEST) == rdp.ConnectionRequest(
        cookie="eltons", protocols=rdp.PROTOCOL_RDP, length=44
    )


def test_connection_request_without_cookie_or_negotiation() -> None:
    request = rdp.connection_request(None, None)
    assert len(request) == 11
    assert rdp.parse_connection_request(request + b"more") == rdp.ConnectionRequest(None, None, 11)


def test_a_routing_token_is_not_a_cookie() -> None:
    token = b"Cookie: msts=3640205228.15629.0000\r\n"
    variable = token + rdp.connection_request(None, rdp.PROTOCOL_HYBRID)[11:]
    request = bytes([3, 0, 0, 11 + len(variable), 6 + len(variable), 0xE0, 0, 0, 0, 0, 0])
    parsed = rdp.parse_connection_request(request + variable)
    assert parsed == rdp.ConnectionRequest(None, rdp.PROTOCOL_HYBRID, 11 + len(variable))


def test_connection_confirm() -> None:
    assert rdp.is_connection_confirm(SPEC_CONFIRM)
    assert rdp.connection_confirm(rdp.PROTOCOL_RDP) == SPEC_CONFIRM.replace(b"\x12\x34", b"\0\0")
    assert rdp.is_connection_confirm(rdp.connection_confirm())
    assert not rdp.is_connection_confirm(SPEC_REQUEST)
    assert rdp.parse_connection_request(SPEC_CONFIRM) is None


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\n\r\n",
        SPEC_REQUEST[:-1],
        SPEC_REQUEST[:4] + b"\x26" + SPEC_REQUEST[5:],  # length indicator disagrees with TPKT
        SPEC_REQUEST[:10] + b"\x10" + SPEC_REQUEST[11:],  # class 1
        bytes.fromhex("0300000702f080"),  # a Data TPDU
    ],
)
def test_not_a_connection_request(data: bytes) -> None:
    assert rdp.parse_connection_request(data) is None


@pytest.mark.parametrize(
    ("data", "waiting"),
    [
        (b"", True),
        (b"\x03", True),
        (b"\x03\x00\x00", True),
        (SPEC_REQUEST[:-1], True),
        (SPEC_REQUEST, False),
        (b"\x03\x01", False),
        (b"\x16\x03\x01", False),  # a TLS ClientHello
        (b"hello", False),
    ],
)
def test_incomplete(data: bytes, waiting: bool) -> None:
    assert rdp.incomplete(data) is waiting


# The RDP stand-in's opening


def test_opening_after_a_request_in_pieces() -> None:
    opening = Opening("PSM1")
    request = rdp.connection_request("alice", rdp.PROTOCOL_SSL | rdp.PROTOCOL_HYBRID)
    assert [opening.feed(bytes([byte])) for byte in request[:-1]] == [b""] * (len(request) - 1)
    assert opening.feed(request[-1:] + b"W") == rdp.connection_confirm(rdp.PROTOCOL_RDP)
    assert opening.feed(b"HO") == b""
    assert not opening.done
    assert opening.feed(b"\nhello") == b"PSM1\nhello"
    assert opening.done


def test_opening_in_one_piece() -> None:
    opening = Opening("PSM1")
    reply = opening.feed(rdp.connection_request(None, None) + b"WHO\nhi")
    assert reply == rdp.connection_confirm() + b"PSM1\nhi"


def test_opening_echoes_what_follows_the_confirm_unless_it_is_who() -> None:
    opening = Opening("PSM1")
    assert opening.feed(rdp.connection_request() + b"WHAT") == rdp.connection_confirm(0) + b"WHAT"
    assert opening.done


def test_opening_names_the_server_before_other_first_bytes() -> None:
    opening = Opening("PSM2")
    assert opening.feed(b"hello") == b"PSM2\nhello"
    assert opening.done


@pytest.mark.parametrize(
    ("sent", "reply"),
    [
        (b"", b""),
        (b"\x03\x00", b"PSM1\n\x03\x00"),
        (rdp.connection_request(None, None) + b"WH", rdp.connection_confirm() + b"WH"),
    ],
)
def test_opening_at_end_of_file(sent: bytes, reply: bytes) -> None:
    opening = Opening("PSM1")
    assert opening.feed(sent) + opening.eof() == reply
    assert opening.done


class FakeTransport:
    def __init__(self) -> None:
        self.written = b""
        self.reading = True

    def write(self, data: bytes) -> None:
        self.written += data

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


def test_rdp_service_reads_only_as_fast_as_the_client_takes_its_echo() -> None:
    connections = Connections()
    service = RdpService("PSM1", connections, hung=False)
    transport = FakeTransport()
    service.connection_made(cast(asyncio.Transport, transport))
    service.data_received(b"hello")
    service.pause_writing()
    assert not transport.reading
    service.resume_writing()
    assert transport.reading
    service.data_received(b" again")
    # Closing once the echo is flushed is what tells the client the echo is complete.
    assert service.eof_received() is False
    service.connection_lost(None)
    assert transport.written == b"PSM1\nhello again"
    assert connections.status() == {"active": 0, "total": 1}


def test_a_hung_rdp_service_never_answers() -> None:
    service = RdpService("PSM1", Connections(), hung=True)
    transport = FakeTransport()
    service.connection_made(cast(asyncio.Transport, transport))
    service.data_received(rdp.connection_request())
    assert service.eof_received() is False
    assert transport.written == b""


# The HTTPS stand-in's answers


@pytest.mark.parametrize(
    ("target", "healthy", "body"),
    [
        (b"/psm/api/health", True, b"PASS"),
        (b"/psm/api/health", False, b"FAIL"),
        (b"/PSM/API/Health?probe=1", True, b"PASS"),
    ],
)
def test_health(target: bytes, healthy: bool, body: bytes) -> None:
    assert answer(b"GET", target, "PSM1", healthy) == (200, [("content-type", "text/plain")], body)


def test_any_other_path_is_the_gateway_page() -> None:
    status, headers, body = answer(b"GET", b"/psm/api/healthz", "PSM<1>", healthy=False)
    assert status == 200
    assert ("content-type", "text/html; charset=utf-8") in headers
    assert b"<h1>PSM&lt;1&gt;</h1>" in body
    assert b"HTML5 gateway stand-in" in body


def test_only_get_and_head() -> None:
    status, headers, _ = answer(b"POST", b"/psm/api/health", "PSM1", healthy=True)
    assert status == 405
    assert ("allow", "GET, HEAD") in headers


# Specs and certificates


def test_default_specs() -> None:
    assert default_specs(2, privileged=False) == [
        LabServerSpec("PSM1", "127.94.0.105", 13389, 10443),
        LabServerSpec("PSM2", "127.94.0.106", 13389, 10443),
    ]
    assert default_specs(1, privileged=True) == [LabServerSpec("PSM1", "127.94.0.105", 3389, 443)]
    with pytest.raises(ValueError, match="servers: 0"):
        default_specs(0, privileged=False)


@pytest.mark.parametrize(("name", "port"), [("../PSM1", 1), ("PSM 1", 1), ("PSM1", 70000)])
def test_a_spec_is_checked(name: str, port: int) -> None:
    with pytest.raises(ValueError, match="is not a"):
        LabServerSpec(name, "127.94.0.105", port, 0)


def test_certificate_is_made_once(tmp_path: Path) -> None:
    path = certificate(tmp_path / "PSM1.pem", "PSM1")
    pem = path.read_bytes()
    assert path.stat().st_mode & 0o777 == 0o600
    subject = x509.load_pem_x509_certificate(pem).subject
    assert subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "PSM1"
    assert certificate(tmp_path / "PSM1.pem", "PSM1").read_bytes() == pem
    assert [p.name for p in tmp_path.iterdir()] == ["PSM1.pem"]


# Lab servers on real sockets, on both event loops the project uses


@pytest.fixture(params=[asyncio.new_event_loop, uvloop.new_event_loop], ids=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Run:
    def run(coroutine: Coroutine[Any, Any, Any]) -> Any:
        with asyncio.Runner(loop_factory=request.param) as runner:
            return runner.run(coroutine)

    return run


def address() -> str:
    return f"127.94.{random.randint(1, 254)}.{random.randint(1, 254)}"


@contextlib.asynccontextmanager
async def lab(lab_dir: Path) -> AsyncIterator[dict[str, Status]]:
    """A lab of one server, PSM1, running in this event loop."""
    task = asyncio.create_task(run_lab([LabServerSpec("PSM1", address(), 0, 0)], lab_dir))
    try:
        yield await ready(lab_dir, lambda: task.result() if task.done() else None)
    finally:
        if not task.done():
            await stop_lab(lab_dir)
        await task


async def ready(lab_dir: Path, check: Callable[[], object]) -> dict[str, Status]:
    """The lab's status once its control socket answers; ``check`` raises if the lab died."""
    async with asyncio.timeout(10):
        while True:
            check()
            with contextlib.suppress(control.ControlError):
                return await lab_status(lab_dir)
            await asyncio.sleep(0.02)


def no_verify() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def fetch(
    server: Status, target: str = "/psm/api/health", method: str = "GET"
) -> tuple[int, bytes]:
    """Status and body of one HTTPS request, parsed by h11 to hold the server to HTTP/1.1."""
    reader, writer = await asyncio.open_connection(
        server["ip"], server["https_port"], ssl=no_verify()
    )
    try:
        client = h11.Connection(h11.CLIENT)
        request = h11.Request(method=method, target=target, headers=[("host", "psm")])
        writer.write(client.send(request) + client.send(h11.EndOfMessage()))
        client.receive_data(await reader.read())
        client.receive_data(b"")
        status, body = 0, b""
        while not isinstance(event := client.next_event(), h11.EndOfMessage):
            if isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                body += event.data
        return status, body
    finally:
        writer.close()
        await writer.wait_closed()


@contextlib.asynccontextmanager
async def connect(
    server: Status,
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection(server["ip"], server["rdp_port"])
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def read_packet(reader: asyncio.StreamReader) -> bytes:
    header = await reader.readexactly(4)
    length = rdp.packet_length(header)
    assert length is not None
    return header + await reader.readexactly(length - 4)


async def echoes(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    writer.write(b"ping")
    return await reader.readexactly(4) == b"ping"


async def silent(reader: asyncio.StreamReader) -> bool:
    try:
        async with asyncio.timeout(0.3):
            await reader.read(1)
    except TimeoutError:
        return True
    return False


def test_health_and_page(run: Run, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with lab(tmp_path) as servers:
            psm1 = servers["PSM1"]
            assert await fetch(psm1) == (200, b"PASS")
            status, page = await fetch(psm1, "/")
            assert status == 200
            assert b"<h1>PSM1</h1>" in page
            assert await fetch(psm1, "/", "HEAD") == (200, b"")
            https = (await lab_status(tmp_path))["PSM1"]["connections"]["https"]
            assert https == {"active": 0, "total": 3}

    run(scenario())


def test_rdp_connection_request_then_echo(run: Run, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with lab(tmp_path) as servers, connect(servers["PSM1"]) as (reader, writer):
            writer.write(rdp.connection_request("alice", rdp.PROTOCOL_SSL | rdp.PROTOCOL_HYBRID))
            assert rdp.is_connection_confirm(await read_packet(reader))
            writer.write(b"WHO\n")
            assert await reader.readline() == b"PSM1\n"
            assert await echoes(reader, writer)
            rdp_connections = (await lab_status(tmp_path))["PSM1"]["connections"]["rdp"]
            assert rdp_connections == {"active": 1, "total": 1}
            writer.write(b"last")
            writer.write_eof()
            assert await reader.read() == b"last"

    run(scenario())


def test_other_first_bytes_get_the_name_then_echo(run: Run, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with lab(tmp_path) as servers, connect(servers["PSM1"]) as (reader, writer):
            writer.write(b"hello")
            assert await reader.readexactly(10) == b"PSM1\nhello"
            assert await echoes(reader, writer)

    run(scenario())


def test_large_echo_keeps_every_byte(run: Run, tmp_path: Path) -> None:
    chunk = random.Random(94).randbytes(256 * 1024)
    chunks = 128  # 32 MiB, far beyond every buffer on the way

    async def send(writer: asyncio.StreamWriter) -> str:
        digest = hashlib.sha256()
        for n in range(chunks):
            data = chunk[n:] + chunk[:n]
            digest.update(data)
            writer.write(data)
            await writer.drain()
        writer.write_eof()
        return digest.hexdigest()

    async def receive(reader: asyncio.StreamReader) -> str:
        digest = hashlib.sha256()
        while data := await reader.read(1024 * 1024):
            digest.update(data)
        return digest.hexdigest()

    async def scenario() -> None:
        async with lab(tmp_path) as servers, connect(servers["PSM1"]) as (reader, writer):
            writer.write(rdp.connection_request())
            assert rdp.is_connection_confirm(await read_packet(reader))
            sent, received = await asyncio.gather(send(writer), receive(reader))
            assert sent == received

    run(scenario())


def test_fail(run: Run, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with lab(tmp_path) as servers, connect(servers["PSM1"]) as (reader, writer):
            psm1 = servers["PSM1"]
            writer.write(b"x")
            await reader.readexactly(6)
            await set_mode(tmp_path, "PSM1", "fail")
            assert await fetch(psm1) == (200, b"FAIL")
            assert (await fetch(psm1, "/"))[0] == 200
            assert await echoes(reader, writer)
            async with connect(psm1) as (new_reader, new_writer):
                new_writer.write(b"x")
                assert await new_reader.readexactly(6) == b"PSM1\nx"
            await set_mode(tmp_path, "PSM1", "pass")
            assert await fetch(psm1) == (200, b"PASS")

    run(scenario())


def test_hang(run: Run, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with lab(tmp_path) as servers:
            psm1 = servers["PSM1"]
            await set_mode(tmp_path, "PSM1", "hang")
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.3):
                    await fetch(psm1)
            async with connect(psm1) as (reader, writer):
                writer.write(rdp.connection_request())
                assert await silent(reader)
            await set_mode(tmp_path, "PSM1", "pass")
            assert await fetch(psm1) == (200, b"PASS")

    run(scenario())


def test_down(run: Run, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with lab(tmp_path) as servers, connect(servers["PSM1"]) as (reader, writer):
            psm1 = servers["PSM1"]
            writer.write(b"x")
            await reader.readexactly(6)
            await set_mode(tmp_path, "PSM1", "down")
            for port in ("rdp_port", "https_port"):
                with pytest.raises(ConnectionRefusedError):
                    await asyncio.open_connection(psm1["ip"], psm1[port])
            assert await echoes(reader, writer)
            status = (await lab_status(tmp_path))["PSM1"]
            assert (status["mode"], status["connections"]["rdp"]["active"]) == ("down", 1)
            await set_mode(tmp_path, "PSM1", "pass")
            assert await fetch(psm1) == (200, b"PASS")
            status = (await lab_status(tmp_path))["PSM1"]
            assert (status["rdp_port"], status["https_port"]) == (
                psm1["rdp_port"],
                psm1["https_port"],
            )
            assert status["connections"]["rdp"] == {"active": 1, "total": 1}

    run(scenario())


def test_stopping_the_lab_ends_its_sessions(run: Run, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with contextlib.AsyncExitStack() as stack:
            servers = await stack.enter_async_context(lab(tmp_path))
            reader, writer = await stack.enter_async_context(connect(servers["PSM1"]))
            writer.write(b"x")
            await reader.readexactly(6)
            await stop_lab(tmp_path)
            with contextlib.suppress(ConnectionResetError):
                assert await reader.read() == b""
            assert not (tmp_path / "lab.sock").exists()

    run(scenario())


@pytest.mark.parametrize(
    ("request_", "error"),
    [
        ({"op": "set", "server": "PSM9", "mode": "fail"}, "server: 'PSM9' is not in the lab"),
        ({"op": "set", "server": "PSM1", "mode": "broken"}, "mode: 'broken' is not one of"),
        ({"op": "restart"}, "op: 'restart' is not one of status, set, stop"),
    ],
)
def test_control_errors(tmp_path: Path, request_: dict[str, str], error: str) -> None:
    async def scenario() -> None:
        async with lab(tmp_path):
            with pytest.raises(control.ControlError, match=error):
                await control.request(tmp_path / "lab.sock", request_)

    asyncio.run(scenario())


# The lab as a process


@pytest.mark.parametrize("how", ["stop", "sigterm"])
def test_lab_process(tmp_path: Path, how: str) -> None:
    command = [sys.executable, "-m", "balancer.lab", "--servers", "2", "--dir", str(tmp_path)]
    process = subprocess.Popen([*command, "--ports", "ephemeral"], stderr=subprocess.PIPE)

    def alive() -> None:
        if process.poll() is not None:
            raise AssertionError(f"the lab exited: {process.stderr.read()!r}")  # type: ignore[union-attr]

    async def scenario() -> None:
        servers = await ready(tmp_path, alive)
        assert [(name, s["ip"]) for name, s in servers.items()] == [
            ("PSM1", "127.94.0.105"),
            ("PSM2", "127.94.0.106"),
        ]
        await set_mode(tmp_path, "PSM2", "fail")
        assert await fetch(servers["PSM1"]) == (200, b"PASS")
        assert await fetch(servers["PSM2"]) == (200, b"FAIL")
        assert b"<h1>PSM2</h1>" in (await fetch(servers["PSM2"], "/"))[1]
        assert (tmp_path / "lab.pid").read_text() == f"{process.pid}\n"
        if how == "stop":
            await stop_lab(tmp_path)
        else:
            process.send_signal(signal.SIGTERM)

    try:
        asyncio.run(scenario())
        _, stderr = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr
    assert b"Traceback" not in stderr, stderr
    assert b"Exception" not in stderr, stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["PSM1.pem", "PSM2.pem"]


def test_a_second_lab_in_the_same_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "lab.pid").write_text(f"{os.getpid()}\n")
    with pytest.raises(FileExistsError, match="a lab already runs here"):
        run_process(default_specs(1, privileged=False), tmp_path)
    assert (tmp_path / "lab.pid").read_text() == f"{os.getpid()}\n"


def test_a_server_that_cannot_listen_stops_the_lab(tmp_path: Path) -> None:
    ip = address()
    with socket.create_server((ip, 0)) as taken:
        port = taken.getsockname()[1]
        specs = [LabServerSpec("PSM1", ip, 0, 0), LabServerSpec("PSM2", ip, port, 0)]
        with pytest.raises(OSError, match="address already in use"):
            asyncio.run(run_lab(specs, tmp_path))
    assert not (tmp_path / "lab.sock").exists()
