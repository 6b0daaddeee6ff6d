"""What was tried to bring the built-in engine to each target of issues 5 and 16, and what it
measured: printed under the profile of any target not met, so that whoever runs the bench next
starts from there. Numbers are from the development machine (2-core VM), each change measured
against the one before on the same run of the bench, or side by side in rounds (the core and the
Python relay alternately). Add to it when you try something. The compiled relay core's (issue
16) come first; the Python relay's (issue 5), which it replaced as the default, after them."""

from __future__ import annotations

CORE_BULK = (
    "The core, issue 16: 64 KiB reads, each written on before the next: ~0.5x the Python "
    "relay's 1 MiB reads at 1, 8 and 64 streams, the proxy's core saturated. On loopback each "
    "read's ACK, and the wakeup of the sender it brings, is paid on the proxy's core.",
    "Reads up to 1 MiB, through one scratch buffer per core, the rest the destination did not "
    "take copied out: one stream 2,500 MB/s, 8 streams 1,680 (the rest copied on nearly every "
    "read once the sink lags).",
    "A read size per flow, doubled while reads fill it and halved when they come short, 64 KiB "
    "buffers for small flows: bimodal, runs either ~2,800 or ~1,550 MB/s at 8 and 64 streams; "
    "a 64 KiB start or a demotion put flows back on small reads (the Python relay ~2,800).",
    "Every read asks for 1 MiB into a pooled buffer; a rest of 64 KiB or less moves to a small "
    "one (the big one back in the pool at once), and while a bigger rest drains the source is "
    "read into the buffer's free end: 1, 8, 64 streams 2,933, 2,960, 2,825 MB/s against the "
    "Python relay's 2,758, 2,849, 2,826 (6 rounds alternated): kept.",
    "Not tried: splice through pooled pipes (the copies are ~20% of the proxy's CPU in bulk; a "
    "pipe costs two descriptors per flow in flight, under a 20,000 open-files limit).",
)

CORE_LATENCY = (
    "The core, issue 16: p50 one at a time ~0.9x HAProxy, p99 with persistence 1.4-1.65x, "
    "without it 0.75-0.85x. Persistence reports three events a connection, which Python reads "
    "in a batch every 20 ms; the proxy's CPU was the same with or without (70 and 68%), so the "
    "p99 is a new connection waiting for the CPU while Python's thread, on the same core, runs "
    "its batch.",
    "Python's thread reniced after it starts the loop thread, 6 rounds alternated with HAProxy "
    "(254 µs): p99 326 µs at nice 0, 300 at +5, 242 at +10; at 13,800 new connections a second "
    "with persistence, the core saturated, Python still read every event (10 s, none lost). "
    "Kept the other way round (relay.c, LOOP_PRIORITY): the loop thread 10 below, where it may "
    "(root), 236 µs against HAProxy's 250; a niced Python thread would have slowed the engine's "
    "health checks and commits behind every other program on a busy machine.",
)

BULK = (
    "asyncio Streams: 2-4x slower than Protocols on every measure (issue 5's own measure); "
    "the relay is two Protocols that pause and resume each other's reading.",
    "`BufferedProtocol` reading into one 1 MiB buffer shared by every connection, each chunk "
    "written on from where it was read: one stream 1,720 -> 2,022 and 2,057 MB/s (1.41x -> "
    "1.45x and 1.58x HAProxy); the same with uvloop's own 256 KB reads gained nothing "
    "(1,683 MB/s).",
    "Write-buffer limits of 512/128 KiB: no pause/resume ping-pong (86 writes in ~7,400 met a "
    "full socket). uvloop already sets TCP_NODELAY; nothing is logged per chunk.",
    "Chunks of 32 KiB or less copied rather than written from the shared buffer, so that a "
    "slow peer never pins it: no change in bulk (chunks are 64 KiB and more).",
    "One stream is not CPU bound: the engine's core is 25-30% idle, the generator's too; each "
    "64 KiB segment is relayed at once and wakes the sink on the other core.",
    "Not tried: `os.splice` through pooled pipes, which would save the two copies "
    "(`_copy_from_iter`, `_copy_to_iter`: ~30% of the engine's CPU in bulk). uvloop owns the "
    "sockets' reads; splicing would mean taking each socket out of its transport for the bulk "
    "phase.",
)

CONNECTIONS = (
    "A Task and an `asyncio.timeout` per client replaced by stepping uvloop's "
    "`create_connection` by hand, and every relay's connect and idle timeouts on one timer, "
    "filed in buckets: 0.39x -> 0.47x HAProxy.",
    "`BufferedProtocol` (for bulk) costs a little per connection: 0.47x -> 0.44x.",
    "Keepalive options set through one socket object, not uvloop's pseudo-socket (one socket "
    "object made and unmade per option).",
    "`gc.freeze()` after start-up and the two protocols' cycle broken at the end: the "
    "collector adds nothing measurable.",
    "Small writes held to the end of the loop's turn, so that the peers are woken once per "
    "turn: wakeups of other processes per connection 0.92 -> 0.56, yet conn/s 10,730 -> 10,390 "
    "(six runs alternated): not kept.",
    "libuv without io_uring (`UV_USE_IO_URING=0`): 10,540 against 10,730 conn/s, no change.",
    "Where it goes: the kernel's work per connection is HAProxy's (the same ~30 system calls); "
    "what differs is ~35 µs of Python and uvloop per connection against HAProxy's ~6 µs, and "
    "that a slower proxy leaves its peers asleep, so that more of its writes must wake them.",
    "`workers = 2` on the second core: x1.47 conn/s (HAProxy nbthread 2: x0.95, the second "
    "core being the generator's).",
    "Left to try: making the real server's socket ourselves (options set before connect, no "
    "`get_extra_info`), ~3 system calls of ~30.",
)

LATENCY = (
    "One connection at a time is the new-connection path alone, so all that was tried for "
    "new connections applies: each connection costs the engine ~1.8x HAProxy's CPU (the "
    "table above), and that is its added latency.",
    *CONNECTIONS[:4],
)

MEMORY = (
    "`__slots__` on both relay objects; the list of bytes held while connecting and the tuple "
    "of servers tried made only when needed; the connect deadline dropped once connected.",
    "A timer per connection (~0.5 KiB) replaced by buckets on one timer: 3.27 -> 2.87 KiB per "
    "idle connection (0.95x -> 0.83x HAProxy).",
    "One read buffer for the process, not one per connection.",
    "What is left is mostly uvloop's: two transports per relayed connection, each with its "
    "libuv handle and a weak reference in uvloop's table of transports. Going below them "
    "means a transport of our own, in C or Cython.",
)

COMMAND_LINE = (
    "Every command imported every command's module and what those import (httpx, "
    "cryptography, typer and the pydantic it checks options with): 0.40 s a command with "
    "bytecode cached, ~0.6 s without. Each command's module is now imported when it runs "
    "(balancer/cli/__init__.py): 0.18 s against a missing socket.",
    "httpx replaced by http.client over the Unix socket (balancer/client.py): its import "
    "(~150 ms) and its transport's TLS context (~70 ms, made even for the Unix socket) gone; "
    "cryptography imported only for HTTPS trust and --ca-file (~60 ms).",
    "What is left is Python itself (~20 ms), typer (~35 ms) and pydantic (~55 ms): typer 0.29 "
    "checks every option through a pydantic TypeAdapter. argparse in typer's place would save "
    "~90 ms a command; not done.",
    "Without cached bytecode (PYTHONDONTWRITEBYTECODE=1, as in the development sandbox) every "
    "module is compiled again on every run, ~0.35 s for typer and pydantic alone: the bench "
    "runs the commands with bytecode cached, as on an installed appliance after a first run.",
)

COMMIT = (
    "One plan (balancer/plan.py): running and desired compared service by service, a service "
    "the edit kept (the same object) skipped without a comparison; at 1,000 x 10 the plan and "
    "the Commit box's changes 100-180 ms -> 1 ms.",
    "The built-in engine is sent only the services a plan changes (one service's JSON for a "
    "weight), not the whole 1.6 MB configuration it parsed, validated and reconfigured service "
    "by service: one weight's commit 1.2 s -> 10 ms (engine and controller alone).",
    "HAProxy: a runtime change is the Runtime API commands the plan gives; haproxy.cfg and "
    "running.json are written from each service's text, kept while the service is the same "
    "object: 0.8 s -> 31 ms.",
    "HAProxy's reload carries only the stick tables 'show table' counts entries in (it read "
    "every table and every server id once a service: an interval's commit took 31 s).",
    "A health-check interval needs a reload on HAProxy: 2.6 has no Runtime API command for a "
    "check's inter. At 1,000 x 10 that is ~1 s: haproxy -c 0.3 s, the master's re-exec and the "
    "new worker 0.6-0.9 s. Not tried: leaving out haproxy -c (a reload HAProxy refuses leaves "
    "the old worker running too, but in fewer words) would save 0.3 s, not enough.",
)

BY_SCENARIO = {
    "bulk_1": (*CORE_BULK, *BULK),
    "bulk_8": (*CORE_BULK, *BULK),
    "bulk_64": (*CORE_BULK, *BULK),
    "connect_50": CONNECTIONS,
    "serial": (*CORE_LATENCY, *LATENCY),
    "idle_memory": MEMORY,
    "control_weight": COMMIT,
    "control_drain": COMMIT,
    "control_interval": COMMIT,
    "control_full_apply": COMMIT,
    "control_cli_status": COMMAND_LINE,
    "control_cli_commit": COMMAND_LINE,
    "control_cli_drain": COMMAND_LINE,
}


def for_scenario(key: str) -> tuple[str, ...]:
    return BY_SCENARIO.get(key, ("Nothing recorded yet.",))
