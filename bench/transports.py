"""``python -m bench.transports N``: what one uvloop TCP transport takes, with its libuv handle
and uvloop's own reference to it, measured with tracemalloc: N loopback connections whose both
ends are uvloop transports with a protocol that holds nothing, the memory they add over 2N,
less the empty protocol. Also the size of the built-in relay's two objects for one connection.
Prints one line of JSON. Run by the bench's profile, in a process of its own so that nothing
else it allocated is counted."""

from __future__ import annotations

import asyncio
import json
import sys
import tracemalloc

import uvloop

from balancer.engines.builtin.relay import ClientSide, ServerSide

ADDRESS = "127.5.0.40"
BUFFER = memoryview(bytearray(64 * 1024))


class Nothing(asyncio.BufferedProtocol):
    __slots__ = ()

    def get_buffer(self, sizehint: int) -> memoryview:
        return BUFFER

    def buffer_updated(self, nbytes: int) -> None:
        pass


async def measure(connections: int) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    accepted = 0

    def count() -> Nothing:
        nonlocal accepted
        accepted += 1
        return Nothing()

    server = await loop.create_server(count, ADDRESS, 0, backlog=connections)
    port = server.sockets[0].getsockname()[1]
    kept: list[object] = [None] * connections  # allocated before the measurement
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(connections):
        kept[i], _ = await loop.create_connection(Nothing, ADDRESS, port)
    for _ in range(500):
        if accepted == connections:
            break
        await asyncio.sleep(0.01)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    if accepted != connections:
        raise SystemExit(f"only {accepted} of {connections} connections were accepted")
    per_transport = (after - before) / (2 * connections) - sys.getsizeof(Nothing())
    relay = sys.getsizeof(ClientSide.__new__(ClientSide))
    relay += sys.getsizeof(ServerSide.__new__(ServerSide))
    for transport in kept:
        transport.close()  # type: ignore[attr-defined]
    server.close()
    return {
        "connections": connections,
        "bytes_per_transport": per_transport,
        "relay_objects_bytes": relay,
    }


def main() -> None:
    connections = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    print(json.dumps(uvloop.run(measure(connections))))


if __name__ == "__main__":
    main()
