"""How many connections HAProxy may take within the open-files limit it runs under. Pure.

HAProxy counts the files it needs before it starts (``compute_ideal_maxsock`` in HAProxy 2.6):
ten of its own; one per listening socket, that is per port of every service; its own sockets
(see ``SOCKETS``); one per health-checked server and one more when the server line names the
check's port; three per thread (its poller and a wake-up pipe); and two per connection, client
side and server side. Above the limit it refuses to start, or a reload takes the master down
with it (``strict-limits`` is its default), so the rendered ``maxconn`` is what is left of the
limit once the rest is counted, halved. The count is checked against HAProxy's own in
tests/haproxy/test_limits.py.

The engine reads the limit when it renders (``Limit.of_this_process``); tests pass a fixed one.
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass

from balancer.validate import Problem

OWN = 10  # HAProxy reserves these before it counts anything
# Listeners and the connections they take regardless of maxconn: the stats socket (a listener
# and 10 connections), the master CLI (a listener and 10 connections), the worker's end of it
# (a listener) and the local peer (a listener and 3 connections).
SOCKETS = 11 + 11 + 1 + 4
# The HA pair's other node as a peer: 3 connections more (measured: show info's Maxsock).
REMOTE_PEER = 3
PER_THREAD = 3  # an epoll file and a wake-up pipe
PER_CONNECTION = 2  # the client's socket and the server's
MAX_THREADS = 64  # Debian's HAProxy 2.6: one thread per CPU it may run on, at most 64
# HAProxy's own floor when it sizes itself (DEFAULT_MAXCONN): a configuration that leaves less
# than this for connections is refused rather than run.
MINIMUM_CONNECTIONS = 100
UNLIMITED = 1 << 20  # what Linux allows a process at most by default (fs.nr_open)


@dataclass(frozen=True, slots=True)
class Limit:
    """The open-files hard limit HAProxy inherits, and the threads it will start."""

    open_files: int
    threads: int

    @classmethod
    def of_this_process(cls) -> Limit:
        """HAProxy is started by this process and inherits its limit, which only root could
        raise past the hard one."""
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY:
            hard = UNLIMITED
        return cls(hard, min(len(os.sched_getaffinity(0)), MAX_THREADS))


@dataclass(frozen=True, slots=True)
class Files:
    """The files HAProxy counts for a configuration before any connection."""

    listeners: int  # a port of a service
    checks: int  # a health-checked real server
    check_ports: int  # a server line that names its check's port: HAProxy counts one more
    own: int  # HAProxy's reserve, its sockets and threads

    @property
    def fixed(self) -> int:
        return self.listeners + self.checks + self.check_ports + self.own


def own(limit: Limit, replicating: bool = False) -> int:
    return OWN + SOCKETS + PER_THREAD * limit.threads + (REMOTE_PEER if replicating else 0)


def max_connections(files: Files, limit: Limit) -> int:
    """The global maxconn: every file the limit leaves, two a connection (may be below the
    minimum; see ``problems``)."""
    return (limit.open_files - files.fixed) // PER_CONNECTION


def problems(files: Files, limit: Limit) -> list[Problem]:
    """A configuration that leaves HAProxy too few files for even ``MINIMUM_CONNECTIONS``."""
    needed = files.fixed + PER_CONNECTION * MINIMUM_CONNECTIONS
    if needed <= limit.open_files:
        return []
    reason = (
        f"HAProxy would need {needed:,} open files: {files.listeners:,} for listening ports, "
        f"{files.checks + files.check_ports:,} for health checks of {files.checks:,} real "
        f"servers (two a server when its check has a port of its own), {files.own:,} of its "
        f"own and {PER_CONNECTION * MINIMUM_CONNECTIONS} for the fewest connections it runs "
        f"with ({MINIMUM_CONNECTIONS}); the open-files limit is {limit.open_files:,}. "
        f"It fits with {needed - limit.open_files:,} fewer listening ports or health checks"
    )
    return [Problem("virtual_services", reason)]
