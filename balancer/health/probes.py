"""What a health check sends and how its answer is judged: pure code, no sockets.

HTTP is parsed with h11 rather than by hand so that chunked bodies, bodies ended by the server
closing the connection, HEAD and 1xx responses are all framed the way a real client frames them.
"""

from __future__ import annotations

from dataclasses import dataclass

import h11

USER_AGENT = "Balancer-health-check"
SNIPPET = 40  # characters of a body shown in a reason: enough to recognise an error page


@dataclass(frozen=True)
class Outcome:
    """The result of one check, with a reason an operator can read in a log line."""

    passed: bool
    reason: str


def http_request(method: str, path: str, host: str) -> bytes:
    """The request's bytes; ValueError if ``path`` holds what HTTP cannot carry (non-ASCII...)."""
    client = h11.Connection(h11.CLIENT)
    headers = [("Host", host), ("User-Agent", USER_AGENT), ("Connection", "close")]
    try:
        request = client.send(h11.Request(method=method, target=path, headers=headers))
    except (h11.LocalProtocolError, UnicodeEncodeError) as error:
        raise ValueError(f"{path!r} is not a valid HTTP path") from error
    return request + client.send(h11.EndOfMessage())


@dataclass(frozen=True)
class _Reply:
    status: int
    reason: str
    body: bytes
    complete: bool  # False when the body was cut short, by a size limit or a dropped connection


def _parse(data: bytes, method: str, eof: bool) -> _Reply | None:
    """The response in ``data``, or None when ``data`` does not hold a response's head."""
    client = h11.Connection(h11.CLIENT)
    # h11 frames a response by the request it answers (a HEAD response has no body), so it has
    # to be told what was sent; the request's bytes themselves are not needed.
    client.send(h11.Request(method=method, target="/", headers=[("Host", "-")]))
    client.send(h11.EndOfMessage())
    client.receive_data(data)
    if eof:
        client.receive_data(b"")
    head: h11.Response | None = None
    body = bytearray()
    complete = False
    while True:
        try:
            event = client.next_event()
        except h11.RemoteProtocolError:
            break
        if isinstance(event, h11.Response):
            head = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif not isinstance(event, h11.InformationalResponse):
            complete = isinstance(event, h11.EndOfMessage)
            break
    if head is None:
        return None
    return _Reply(head.status_code, _text(head.reason), bytes(body), complete)


def response_complete(data: bytes, method: str) -> bool:
    """Whether ``data`` already holds a whole response, so reading can stop before EOF."""
    reply = _parse(data, method, eof=False)
    return reply is not None and reply.complete


def judge_http(data: bytes, method: str, expect: str | None) -> Outcome:
    """Judge everything the server sent; a body cut short is judged on what arrived."""
    if not data:
        return Outcome(False, "no response")
    reply = _parse(data, method, eof=True)
    if reply is None:
        return Outcome(False, "not an HTTP response")
    status = f"HTTP {reply.status} {reply.reason}".rstrip()
    if not 200 <= reply.status < 300:
        return Outcome(False, status)
    if expect is None:
        return Outcome(True, status)
    if expect.encode() in reply.body:
        return Outcome(True, f"{expect} (HTTP {reply.status})")
    return Outcome(False, f"expected {expect}, got {_snippet(reply.body) or 'an empty body'}")


def judge_exit(returncode: int, output: bytes) -> Outcome:
    """Judge an external check script: exit status 0 passes, and its output explains a failure."""
    if returncode == 0:
        return Outcome(True, "script passed")
    # asyncio reports a script killed by a signal as the negative signal number.
    why = f"killed by signal {-returncode}" if returncode < 0 else f"exited {returncode}"
    said = _snippet(output)
    return Outcome(False, f"script {why}: {said}" if said else f"script {why}")


def _snippet(data: bytes) -> str:
    """The start of ``data`` on one line and printable, to quote in a reason."""
    words = _text(data[: SNIPPET * 4]).split()
    text = "".join(c if c.isprintable() else "?" for c in " ".join(words))
    return text if len(text) <= SNIPPET else text[: SNIPPET - 3] + "..."


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")
