"""Alerts: which events alert, grouping, back-off, and each channel received by a real local
receiver (an SMTP server with STARTTLS and AUTH, an HTTP receiver checking the signature, a
UDP socket for syslog)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from balancer import certificates, events
from balancer.alerts import send, subscriber
from balancer.alerts.channels import Channel, Email, Syslog, Webhook
from balancer.alerts.grouping import Grouper, Message
from balancer.alerts.rules import Alert, Watch
from balancer.controller import CommitFailed, Controller
from balancer.engines import EngineRejected
from balancer.model import Config, RealServer, VirtualService
from balancer.plan import Plan
from balancer.store import Store
from tests.webapp import FakeEngine

PSM = Config(
    virtual_services=(
        VirtualService(
            label="CyberArk-PSM",
            ip="192.168.94.100",
            ports="3389",
            real_servers=(
                RealServer(label="PSM1", ip="10.0.0.1"),
                RealServer(label="PSM2", ip="10.0.0.2"),
            ),
        ),
    )
)


def health(server: str, state: str, at: float = 0.0) -> events.HealthChanged:
    return events.HealthChanged("CyberArk-PSM", server, state, "connect failed", at)


def test_which_events_alert() -> None:
    watch = Watch()
    first = watch.see(health("PSM1", "down"), PSM)
    assert [(a.key, a.severity) for a in first] == [("server CyberArk-PSM/PSM1", "warning")]
    both = watch.see(health("PSM2", "down"), PSM)
    assert [(a.kind, a.summary) for a in both][1] == (
        "service_down",
        "virtual service CyberArk-PSM has no real server up",
    )
    back = watch.see(health("PSM2", "up"), PSM)
    assert [a.kind for a in back] == ["health_changed", "service_up"]
    assert watch.see(health("PSM1", "up"), PSM)[1:] == [], "the service had one up already"
    said = [
        (alert.key, alert.severity)
        for event in (
            events.EngineChanged("port 3389 in use", 1.0),
            events.EngineChanged(None, 2.0),
            events.CommitFailed(7, "admin", "HAProxy refused it", 3.0),
            events.RoleChanged("primary", "passive", "active", "operator", 4.0),
            events.SplitBrain(True, 5.0, ("both hold 192.168.94.100",), 5.0),
        )
        for alert in watch.see(event, PSM)
    ]
    assert said == [
        ("engine", "error"),
        ("engine", "notice"),
        ("commit", "error"),
        ("role", "warning"),
        ("split brain", "error"),
    ]
    assert watch.see(events.RevisionApplied(8, "admin", 6.0), PSM) == []


def test_a_flapping_server_sends_one_message_a_window() -> None:
    grouper, watch, sent = Grouper(window=300.0), Watch(), []
    for n in range(100):  # down and up every second
        for alert in watch.see(health("PSM1", "down" if n % 2 == 0 else "up", n), PSM):
            sent += grouper.offer(alert, float(n))
        sent += grouper.due(float(n))
    assert [m.folded for m in sent] == [1], "the first at once, the rest folded"
    assert grouper.next_due() == 300.0
    folded = grouper.due(300.0)
    assert [(m.folded, m.alert.summary) for m in folded] == [
        (99, "real server PSM1 of CyberArk-PSM is up: connect failed")
    ]
    assert "(99 changes since the last message)" in folded[0].text()
    assert grouper.due(600.0) == []
    assert grouper.next_due() is None
    assert [m.folded for m in grouper.offer(watch.see(health("PSM1", "down"), PSM)[0], 601)] == [1]


def test_back_off_doubles_up_to_its_limit_and_gives_up() -> None:
    assert send.delays(6, 2.0, 10.0) == [2.0, 4.0, 8.0, 10.0, 10.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    async def never() -> None:
        raise send.SendFailed("connection refused")

    assert asyncio.run(send.deliver(never, [1.0, 2.0, 4.0], sleep)) == "connection refused"
    assert slept == [1.0, 2.0, 4.0]


@dataclass
class Receiver:
    """An HTTP receiver that answers each POST with the next of ``statuses`` (then 200)."""

    statuses: list[int]
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    received: asyncio.Event = field(default_factory=asyncio.Event)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode().split("\r\n")
        headers = dict(line.split(": ", 1) for line in head[1:] if ": " in line)
        headers = {k.lower(): v for k, v in headers.items()}
        body = await reader.readexactly(int(headers["content-length"]))
        self.requests.append((headers, body))
        status = self.statuses.pop(0) if self.statuses else 200
        writer.write(
            f"HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".encode()
        )
        await writer.drain()
        writer.close()
        if status == 200:
            self.received.set()


async def receiving(receiver: Receiver) -> tuple[asyncio.Server, str]:
    server = await asyncio.start_server(receiver.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/alerts"


def test_webhook_signed_and_retried_with_back_off_on_a_receiver_that_fails_twice() -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    async def scenario() -> Receiver:
        receiver = Receiver([503, 500])
        server, url = await receiving(receiver)
        async with server:
            channel = Channel(name="ops", settings=Webhook(url=url), secret="s3cret-hmac")
            message = Message(Alert("engine", "engine_changed", "error", "engine: down", 9.0))
            failure = await send.deliver(
                lambda: send.send(channel, message, "lb1", clock=lambda: 1000.0),
                [1.0, 2.0, 4.0],
                sleep,
            )
            assert failure is None
        return receiver

    receiver = asyncio.run(scenario())
    assert slept == [1.0, 2.0], "two failures, two waits, doubling"
    assert len(receiver.requests) == 3
    headers, body = receiver.requests[-1]
    assert headers[send.TIMESTAMP.lower()] == "1000"
    mac = hmac.new(b"s3cret-hmac", b"1000." + body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers[send.SIGNATURE.lower()], "sha256=" + mac)
    assert json.loads(body) == {
        "node": "lb1",
        "kind": "engine_changed",
        "key": "engine",
        "severity": "error",
        "summary": "engine: down",
        "folded": 1,
        "at": 9.0,
    }


def test_syslog_over_udp_is_rfc5424() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        udp.settimeout(10)
        port = udp.getsockname()[1]
        channel = Channel(name="syslog", settings=Syslog(host="127.0.0.1", port=port))
        alert = Alert("server Web/web1", "health_changed", "warning", "web1 is down", 0.25)
        asyncio.run(send.send(channel, Message(alert, 3), "lb1"))
        line = udp.recv(4096).decode()
    # local0 (16) * 8 + warning (4)
    assert line == (
        "<132>1 1970-01-01T00:00:00.250Z lb1 balancer - health_changed - "
        "web1 is down (3 changes since the last message)"
    )


@dataclass
class Mailbox:
    """A small SMTP server: STARTTLS, then AUTH PLAIN or LOGIN, then one or more messages."""

    context: ssl.SSLContext
    mechanism: str
    user: str = "alerts"
    password: str = "mail-pa55"
    mails: list[str] = field(default_factory=list)
    authenticated: list[str] = field(default_factory=list)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tls = False

        async def say(line: str) -> None:
            writer.write(line.encode() + b"\r\n")
            await writer.drain()

        async def read() -> str:
            return (await reader.readline()).decode().rstrip("\r\n")

        await say("220 localhost ESMTP test")
        for _ in range(50):
            command = await read()
            verb = command.split(" ", 1)[0].upper()
            if verb == "EHLO":
                offers = ["AUTH " + self.mechanism] if tls else ["STARTTLS"]
                await say("\r\n".join(["250-localhost", *(f"250 {o}" for o in offers)]))
            elif verb == "STARTTLS":
                await say("220 go ahead")
                await writer.start_tls(self.context)
                tls = True
            elif verb == "AUTH":
                given = command.split(" ")
                if given[1] == "PLAIN":
                    _, user, password = base64.b64decode(given[2]).decode().split("\0")
                else:
                    user = base64.b64decode(given[2]).decode()
                    await say("334 UGFzc3dvcmQ6")
                    password = base64.b64decode(await read()).decode()
                ok = tls and (user, password) == (self.user, self.password)
                if ok:
                    self.authenticated.append(given[1])
                await say("235 ok" if ok else "535 no")
            elif verb in ("MAIL", "RCPT"):
                await say("250 ok" if self.authenticated else "530 authenticate first")
            elif verb == "DATA":
                await say("354 go on")
                lines = []
                while (line := await read()) != ".":
                    lines.append(line)
                self.mails.append("\n".join(lines))
                await say("250 queued")
            elif verb == "QUIT":
                await say("221 bye")
                break
            else:
                await say("502 what")
        writer.close()


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_an_alert_email_over_starttls_with_auth(tmp_path: Path, mechanism: str) -> None:
    pem = certificates.certificate(tmp_path / "smtp.pem", "localhost")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pem)
    mailbox = Mailbox(context, mechanism)

    async def scenario() -> None:
        server = await asyncio.start_server(mailbox.serve, "127.0.0.1", 0)
        async with server:
            settings = Email(
                host="localhost",
                port=server.sockets[0].getsockname()[1],
                username="alerts",
                sender="lb1@example.com",
                recipients=("ops@example.com",),
                ca_file=str(pem),
            )
            channel = Channel(name="mail", settings=settings, secret="mail-pa55")
            said = "no server up:\nPSM1 refused"
            alert = Alert("service CyberArk-PSM", "service_down", "error", said, 1.0)
            await send.send(channel, Message(alert), "lb1")
            wrong = channel.model_copy(update={"secret": "wrong"})
            with pytest.raises(send.SendFailed, match="SMTPAuthenticationError"):
                await send.send(wrong, Message(alert), "lb1")

    asyncio.run(scenario())
    assert mailbox.authenticated == [mechanism]
    (mail,) = mailbox.mails
    assert "Subject: [Balancer lb1] no server up: PSM1 refused" in mail
    assert "To: ops@example.com" in mail
    assert "kind: service_down" in mail


def test_the_subscriber_sends_to_every_channel_and_groups(tmp_path: Path) -> None:
    """From the event stream to a webhook: a server flapping 20 times is one message at once
    and one, saying 19, when the window closes (the time is a fake clock: each event's own, as
    the subscriber reads it, however its sends and the test interleave)."""
    now = [0.0]
    with Store(tmp_path / "balancer.db") as store:

        async def scenario() -> Receiver:
            receiver = Receiver([])
            server, url = await receiving(receiver)
            async with server:
                store.save_alert_channel("ops", Webhook(url=url).model_dump(), "k", author="t")
                stream = events.Stream()
                reading = EventTime(stream, now=now)
                stream._subscribers.add(reading)
                task = asyncio.create_task(
                    subscriber.run(reading, store, clock=lambda: now[0], window=60.0)
                )
                for n in range(20):
                    stream.publish(health("PSM1", "down" if n % 2 == 0 else "up", n))
                await wait_for(lambda: len(receiver.requests) == 1)
                stream.publish(events.RevisionApplied(1, "admin", 61.0))  # no alert: the time
                await wait_for(lambda: len(receiver.requests) == 2)
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            return receiver

        receiver = asyncio.run(scenario())
    sent = [json.loads(body) for _, body in receiver.requests]
    assert [(m["folded"], m["summary"].split(":")[0]) for m in sent] == [
        (1, "real server PSM1 of CyberArk-PSM is down"),
        (19, "real server PSM1 of CyberArk-PSM is up"),
    ]


@dataclass(eq=False, slots=True)
class EventTime(events.Subscription):
    """A subscription that sets the fake clock to each event's time as it is read."""

    now: list[float] = field(default_factory=lambda: [0.0])

    async def next(self) -> events.Event | events.Missed:
        event = await events.Subscription.next(self)
        self.now[0] = getattr(event, "at", self.now[0])
        return event


async def wait_for(condition: Callable[[], bool]) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("not received in 5 s")


def test_a_refused_commit_is_an_event_and_an_alert(tmp_path: Path) -> None:
    class Refusing(FakeEngine):
        async def apply(self, plan: Plan) -> None:
            raise EngineRejected("port 3389: address in use")

    with Store(tmp_path / "balancer.db") as store:
        controller = Controller(store, Refusing(), clock=lambda: 5.0)
        store.save(PSM, base=0, author="admin", message="PSM")
        seen = controller.events.subscribe()
        with pytest.raises(CommitFailed):
            asyncio.run(controller.commit("admin"))
    failed = [e for e in seen.pending() if isinstance(e, events.CommitFailed)]
    assert failed == [events.CommitFailed(1, "admin", "port 3389: address in use", 5.0)]
    (alert,) = Watch().see(failed[0], PSM)
    assert (alert.key, alert.severity, alert.summary) == (
        "commit",
        "error",
        "commit of revision 1 by admin failed: port 3389: address in use",
    )
