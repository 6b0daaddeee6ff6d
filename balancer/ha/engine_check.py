"""Whether this node's data plane answers: keepalived's check (``keepalived.EngineCheck``)
and ``balancer engine-check``.

keepalived runs it every second and gives the floating IPs up when it fails. It asks the
engine itself, never ``balancer serve``: the management daemon may restart while the data
plane relays on, and that must not move the floating IPs. It imports nothing but the standard
library: ``python -m balancer.ha.engine_check`` starts in about 30 ms, where the ``balancer``
command's typer and pydantic take 0.3 s of a core, every second. So it imports no engine
either; the socket paths below mirror the engines' own (a test holds them equal).
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from pathlib import Path

# Below keepalived's one-second timeout: a check keepalived kills counts as failed anyway,
# but this one says why.
TIME_LIMIT = 0.5

# The built-in engine's control socket (balancer.engines.builtin.process.paths) and HAProxy's
# master CLI (balancer.engines.haproxy.paths.Paths.master_socket), in the data directory.
BUILTIN_SOCKET = "engine.sock"
HAPROXY_SOCKET = "haproxy/master.sock"
# The current worker's revision, through the master (balancer.engines.haproxy.runtime):
# an answer proves the worker that relays answers, not only the master.
HAPROXY_REVISION = b"@1 show env BALANCER_REVISION\n"


class NotAnswering(Exception):
    """Why the engine does not count as answering, in one line."""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="balancer-engine-check", description=__doc__)
    parser.add_argument("--dir", type=Path, required=True, help="the appliance's data directory")
    sys.exit(verdict(parser.parse_args(argv).dir))


def verdict(data_dir: Path) -> int:
    """0 if the engine in ``data_dir`` answers and runs a revision, else 1, saying why on
    standard error in one line."""
    try:
        check(data_dir.resolve(), time.monotonic() + TIME_LIMIT)
    except NotAnswering as error:
        print(f"error: engine: {error}", file=sys.stderr)
        return 1
    return 0


def check(data_dir: Path, deadline: float) -> None:
    """Raise NotAnswering unless the engine whose socket is in ``data_dir`` answers."""
    haproxy, builtin = data_dir / HAPROXY_SOCKET, data_dir / BUILTIN_SOCKET
    # An engine that stops removes its socket, so the one present is the one that runs; one
    # killed outright leaves it, and then nothing listens on it.
    if haproxy.exists():
        revision = _haproxy_revision(_ask(haproxy, HAPROXY_REVISION, deadline))
        name = "HAProxy"
    elif builtin.exists():
        revision = _builtin_revision(_ask(builtin, b'{"op": "status"}\n', deadline))
        name = "the built-in engine"
    else:
        raise NotAnswering(f"not running (no {BUILTIN_SOCKET} or {HAPROXY_SOCKET} in {data_dir})")
    if revision is None:
        raise NotAnswering(f"{name} runs no revision")


def _ask(path: Path, request: bytes, deadline: float) -> bytes:
    """The first line of the reply to ``request`` on the Unix socket ``path``."""
    limit_ms = round(TIME_LIMIT * 1000)
    reply = b""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.settimeout(max(deadline - time.monotonic(), 0.001))
            connection.connect(str(path))
            connection.sendall(request)
            connection.shutdown(socket.SHUT_WR)  # one request: HAProxy's CLI answers at the end
            # Bounded by the deadline; a status reply is a few kilobytes per service.
            while b"\n" not in reply:
                connection.settimeout(max(deadline - time.monotonic(), 0.001))
                chunk = connection.recv(65536)
                if not chunk:
                    break
                reply += chunk
    except TimeoutError:
        raise NotAnswering(f"{path} not answering in {limit_ms} ms") from None
    except (ConnectionRefusedError, FileNotFoundError):
        raise NotAnswering(f"not running (nothing listens on {path})") from None
    except OSError as error:
        raise NotAnswering(f"{path}: {error.strerror or error}") from None
    if not reply:
        raise NotAnswering(f"{path} closed without answering")
    return reply.split(b"\n", 1)[0]


def _builtin_revision(line: bytes) -> int | None:
    try:
        reply = json.loads(line)
        if not reply.get("ok"):
            raise NotAnswering(f"the built-in engine answered: {reply.get('error')}")
        revision = reply["status"]["revision"]
    except (ValueError, KeyError, TypeError, AttributeError):
        raise NotAnswering(f"the built-in engine answered {line[:80]!r}") from None
    return None if revision is None else int(revision)


def _haproxy_revision(line: bytes) -> int | None:
    # The master CLI answers "BALANCER_REVISION=<n>", or an error line without '='.
    name, _, value = line.decode(errors="replace").strip().partition("=")
    return int(value) if name == "BALANCER_REVISION" and value.isdigit() else None


if __name__ == "__main__":
    main()
