"""Where the HAProxy engine keeps its files: ``<data dir>/haproxy/`` and two logs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Paths:
    data_dir: Path

    @property
    def directory(self) -> Path:
        return self.data_dir / "haproxy"

    @property
    def config(self) -> Path:
        """The haproxy.cfg the master loads at every reload: always the one that runs."""
        return self.directory / "haproxy.cfg"

    @property
    def running(self) -> Path:
        """The model of what runs and its revision (JSON), for a daemon that attaches later."""
        return self.directory / "running.json"

    @property
    def master_socket(self) -> Path:
        return self.directory / "master.sock"

    @property
    def stats_socket(self) -> Path:
        return self.directory / "haproxy.sock"

    @property
    def pid_file(self) -> Path:
        return self.directory / "haproxy.pid"

    @property
    def state_file(self) -> Path:
        """Health states handed from one worker to the next across a reload."""
        return self.directory / "server-state"

    @property
    def log(self) -> Path:
        """HAProxy's log lines (connections, health changes): the workers' standard output."""
        return self.data_dir / "logs" / "haproxy.log"

    @property
    def output(self) -> Path:
        """The master's own messages: start-up, reloads and their alerts."""
        return self.data_dir / "logs" / "haproxy.out"
