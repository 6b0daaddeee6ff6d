"""The built-in relay's shared read buffer: a chunk the peer could not take whole must never be
overwritten by the next read, and a small one must not pin the whole buffer."""

from __future__ import annotations

from typing import Any

from balancer.engines.builtin.relay import COPY_UP_TO, READ_SIZE, ReadBuffer


class SlowPeer:
    """A transport that takes ``takes`` bytes of each write and queues the rest, as uvloop does:
    keeping the object it was given, not a copy."""

    def __init__(self, takes: int) -> None:
        self.takes = takes
        self.queued: list[Any] = []

    def write(self, data: Any) -> None:
        if len(data) > self.takes:
            self.queued.append(data[self.takes :])

    def get_write_buffer_size(self) -> int:
        return sum(len(chunk) for chunk in self.queued)


def read(buffer: ReadBuffer, data: bytes) -> int:
    buffer.view[: len(data)] = data
    return len(data)


def test_a_big_chunk_left_queued_keeps_its_bytes_and_the_next_read_gets_a_fresh_buffer() -> None:
    buffer, peer = ReadBuffer(), SlowPeer(takes=1000)
    first = buffer.view
    buffer.relay(read(buffer, b"a" * (COPY_UP_TO + 1)), peer)  # type: ignore[arg-type]
    assert buffer.view is not first
    read(buffer, b"b" * READ_SIZE)
    assert bytes(peer.queued[0]) == b"a" * (COPY_UP_TO + 1 - 1000)


def test_a_small_chunk_left_queued_is_a_copy_and_pins_nothing() -> None:
    buffer, peer = ReadBuffer(), SlowPeer(takes=10)
    first = buffer.view
    buffer.relay(read(buffer, b"a" * 100), peer)  # type: ignore[arg-type]
    assert buffer.view is first  # the shared buffer stays shared
    assert isinstance(peer.queued[0], bytes)
    read(buffer, b"b" * 100)
    assert peer.queued[0] == b"a" * 90


def test_behind_a_queue_even_a_big_chunk_is_copied() -> None:
    buffer, peer = ReadBuffer(), SlowPeer(takes=0)
    peer.queued.append(b"x")
    first = buffer.view
    buffer.relay(read(buffer, b"a" * (COPY_UP_TO * 2)), peer)  # type: ignore[arg-type]
    assert buffer.view is first
    assert isinstance(peer.queued[-1], bytes)
