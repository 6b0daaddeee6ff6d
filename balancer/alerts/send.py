"""Sending a message to a channel, and trying again with back-off. Each send is one attempt
that returns or raises ``SendFailed`` in one line; no secret is in a line it raises."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import smtplib
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

import httpx

from balancer.alerts.channels import Channel, Email, Syslog, Webhook
from balancer.alerts.grouping import Message

SIGNATURE = "X-Balancer-Signature"
TIMESTAMP = "X-Balancer-Timestamp"
# RFC 5424's severities by name; the alerts use error, warning, notice and info.
SEVERITY = {"error": 3, "warning": 4, "notice": 5, "info": 6}
TRIES = 5
FIRST_DELAY = 2.0
MAX_DELAY = 120.0
SMTP_TIMEOUT = 15.0


class SendFailed(Exception):
    """One line: why the channel did not take the message."""


def payload(message: Message, node: str) -> dict[str, Any]:
    alert = message.alert
    return {
        "node": node,
        "kind": alert.kind,
        "key": alert.key,
        "severity": alert.severity,
        "summary": message.text(),
        "folded": message.folded,
        "at": alert.at,
    }


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """HMAC-SHA256 of "<timestamp>.<body>": the timestamp is signed too, so a receiver that
    refuses old timestamps cannot be sent a recorded request again."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


async def send(
    channel: Channel, message: Message, node: str, clock: Callable[[], float] = time.time
) -> None:
    try:
        match channel.settings:
            case Webhook() as webhook:
                await _webhook(webhook, channel.secret, message, node, clock())
            case Syslog() as syslog:
                await asyncio.to_thread(_syslog, syslog, message, node)
            case Email() as email:
                await asyncio.to_thread(_email, email, channel.secret, message, node)
    except (
        OSError,
        ValueError,  # an address the resolver or the mail library cannot take
        httpx.HTTPError,
        httpx.InvalidURL,
        smtplib.SMTPException,
        ssl.SSLError,
    ) as error:
        raise SendFailed(f"{type(error).__name__}: {error}".rstrip(": ")) from None


def delays(tries: int = TRIES, first: float = FIRST_DELAY, limit: float = MAX_DELAY) -> list[float]:
    """The waits between ``tries`` attempts: doubling from ``first``, none above ``limit``."""
    return [min(first * 2**n, limit) for n in range(tries - 1)]


async def deliver(
    attempt: Callable[[], Awaitable[None]],
    waits: list[float],
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> str | None:
    """Try, and after each failure wait the next of ``waits``; None once sent, else the last
    failure's line."""
    failure = ""
    for wait in [*waits, None]:
        try:
            await attempt()
        except SendFailed as error:
            failure = str(error)
        else:
            return None
        if wait is not None:
            await sleep(wait)
    return failure


async def _webhook(webhook: Webhook, secret: str, message: Message, node: str, now: float) -> None:
    body = json.dumps(payload(message, node)).encode()
    timestamp = str(int(now))
    headers = {"Content-Type": "application/json", TIMESTAMP: timestamp}
    if secret:
        headers[SIGNATURE] = signature(secret, timestamp, body)
    async with httpx.AsyncClient(timeout=webhook.timeout) as client:
        answer = await client.post(webhook.url, content=body, headers=headers)
    if answer.status_code >= 300:
        raise SendFailed(f"the webhook answered {answer.status_code} {answer.reason_phrase}")


def rfc5424(syslog: Syslog, message: Message, node: str) -> bytes:
    alert = message.alert
    priority = syslog.facility * 8 + SEVERITY[alert.severity]
    stamp = datetime.fromtimestamp(alert.at, UTC).isoformat(timespec="milliseconds")
    stamp = stamp.replace("+00:00", "Z")
    header = f"<{priority}>1 {stamp} {node or '-'} balancer - {alert.kind} -"
    return f"{header} {message.text()}".encode()


def _syslog(syslog: Syslog, message: Message, node: str) -> None:
    line = rfc5424(syslog, message, node)
    if syslog.transport == "tcp":
        with socket.create_connection((syslog.host, syslog.port), timeout=5) as tcp:
            tcp.sendall(b"%d " % len(line) + line)  # octet counting, RFC 6587
        return
    if syslog.transport == "udp":
        family, kind, _, _, address = socket.getaddrinfo(
            syslog.host, syslog.port, type=socket.SOCK_DGRAM
        )[0]
        with socket.socket(family, kind) as udp:
            udp.sendto(line, address)
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as local:
        local.sendto(line, syslog.path)


def _email(email: Email, password: str, message: Message, node: str) -> None:
    mail = EmailMessage()
    mail["From"] = email.sender
    mail["To"] = ", ".join(email.recipients)
    # One line: a header may not hold a line break, and a reason may.
    mail["Subject"] = " ".join(f"[Balancer {node}] {message.alert.summary}".split())
    mail.set_content(
        "\n".join(f"{name}: {value}" for name, value in payload(message, node).items()) + "\n"
    )
    with smtplib.SMTP(email.host, email.port, timeout=SMTP_TIMEOUT) as smtp:
        smtp.ehlo()
        if email.starttls:
            smtp.starttls(context=ssl.create_default_context(cafile=email.ca_file))
            smtp.ehlo()
        if email.username:
            smtp.login(email.username, password)
        smtp.send_message(mail)
