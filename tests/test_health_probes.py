"""Building health-check requests and judging replies, with no sockets."""

from __future__ import annotations

import pytest

from balancer.health.probes import (
    Outcome,
    http_request,
    judge_exit,
    judge_http,
    response_complete,
)

OK_PASS = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nContent-Type: text/plain\r\n\r\nPASS"


def test_request_is_http11_with_host_agent_and_close() -> None:
    request = http_request("GET", "/psm/api/health", "10.0.0.5")
    head, _, body = request.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"GET /psm/api/health HTTP/1.1"
    assert set(lines[1:]) == {
        b"Host: 10.0.0.5",
        b"User-Agent: Balancer-health-check",
        b"Connection: close",
    }
    assert body == b""


def test_head_request() -> None:
    assert http_request("HEAD", "/", "127.0.0.1:8080").startswith(b"HEAD / HTTP/1.1\r\n")


@pytest.mark.parametrize("path", ["/psm/\u00e9", "/a\tb", "/a\x00b"])
def test_a_path_http_cannot_carry_is_refused(path: str) -> None:
    with pytest.raises(ValueError, match="is not a valid HTTP path"):
        http_request("GET", path, "127.0.0.1")


@pytest.mark.parametrize(
    ("data", "method", "expect", "outcome"),
    [
        (OK_PASS, "GET", "PASS", Outcome(True, "PASS (HTTP 200)")),
        (OK_PASS, "GET", None, Outcome(True, "HTTP 200 OK")),
        (OK_PASS, "GET", "ASS", Outcome(True, "ASS (HTTP 200)")),  # contained, as HAProxy does
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nFAIL",
            "GET",
            "PASS",
            Outcome(False, "expected PASS, got FAIL"),
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            "GET",
            "PASS",
            Outcome(False, "expected PASS, got an empty body"),
        ),
        (
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nPASS",
            "GET",
            "PASS",
            Outcome(False, "HTTP 503 Service Unavailable"),
        ),
        (b"HTTP/1.1 404 \r\nContent-Length: 0\r\n\r\n", "GET", None, Outcome(False, "HTTP 404")),
        (
            b"HTTP/1.1 302 Found\r\nLocation: /x\r\n\r\n",
            "GET",
            None,
            Outcome(False, "HTTP 302 Found"),
        ),
        (b"HTTP/1.1 204 No Content\r\n\r\n", "GET", None, Outcome(True, "HTTP 204 No Content")),
        # Ended by the server closing the connection, with neither length nor chunking.
        (
            b"HTTP/1.0 200 OK\r\n\r\nall is PASS here",
            "GET",
            "PASS",
            Outcome(True, "PASS (HTTP 200)"),
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nPA\r\n2\r\nSS\r\n0\r\n\r\n",
            "GET",
            "PASS",
            Outcome(True, "PASS (HTTP 200)"),
        ),
        (
            b"HTTP/1.1 100 Continue\r\n\r\n" + OK_PASS,
            "GET",
            "PASS",
            Outcome(True, "PASS (HTTP 200)"),
        ),
        # A HEAD reply announces a length but carries no body.
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n",
            "HEAD",
            None,
            Outcome(True, "HTTP 200 OK"),
        ),
        (b"", "GET", "PASS", Outcome(False, "no response")),
        (b"SSH-2.0-OpenSSH_9.6\r\n", "GET", None, Outcome(False, "not an HTTP response")),
        (b"\x16\x03\x01\x00\x05hello", "GET", None, Outcome(False, "not an HTTP response")),
        (b"HTTP/1.1 200 OK\r\nContent-Le", "GET", None, Outcome(False, "not an HTTP response")),
    ],
)
def test_judge_http(data: bytes, method: str, expect: str | None, outcome: Outcome) -> None:
    assert judge_http(data, method, expect) == outcome


def test_a_body_cut_short_is_judged_on_what_arrived() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n"
    assert judge_http(head + b"PASS" + b"x" * 100, "GET", "PASS") == Outcome(
        True, "PASS (HTTP 200)"
    )
    assert judge_http(head + b"x" * 100, "GET", "PASS").passed is False


def test_the_body_quoted_in_a_reason_is_short_printable_and_on_one_line() -> None:
    page = b"<html>\r\n  <body>\tError\x00\x07 " + "caf\u00e9 ".encode() + b"y" * 200
    data = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(page) + page
    reason = judge_http(data, "GET", "PASS").reason
    assert reason.startswith("expected PASS, got <html> <body> Error?? caf\u00e9 yyy")
    assert reason.endswith("...")
    assert len(reason) == len("expected PASS, got ") + 40


def test_invalid_utf8_does_not_break_the_reason() -> None:
    data = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n\xff\xfeA"
    assert judge_http(data, "GET", "PASS") == Outcome(False, "expected PASS, got \ufffd\ufffdA")


@pytest.mark.parametrize(
    ("data", "method", "complete"),
    [
        (b"", "GET", False),
        (OK_PASS[:-1], "GET", False),
        (OK_PASS, "GET", True),
        (OK_PASS + b"trailing junk", "GET", True),
        (b"HTTP/1.1 200 OK\r\n\r\nPASS", "GET", False),  # ends only when the server closes
        (b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n", "HEAD", True),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nPASS\r\n0\r\n\r\n",
            "GET",
            True,
        ),
        (b"garbage\r\n\r\n", "GET", False),
    ],
)
def test_response_complete(data: bytes, method: str, complete: bool) -> None:
    assert response_complete(data, method) is complete


@pytest.mark.parametrize(
    ("returncode", "output", "outcome"),
    [
        (0, b"", Outcome(True, "script passed")),
        (0, b"all good\n", Outcome(True, "script passed")),
        (1, b"", Outcome(False, "script exited 1")),
        (
            2,
            b"  RDS service stopped\n  on host\n",
            Outcome(False, "script exited 2: RDS service stopped on host"),
        ),
        (-9, b"", Outcome(False, "script killed by signal 9")),
    ],
)
def test_judge_exit(returncode: int, output: bytes, outcome: Outcome) -> None:
    assert judge_exit(returncode, output) == outcome
