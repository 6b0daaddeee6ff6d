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
    def peers_socket(self) -> Path:
        """Where a standalone node's worker hands its stick tables to the next at a reload."""
        return self.directory / "peers.sock"

    @property
    def replication(self) -> Path:
        """The persistence replication settings (JSON), kept while the node is paired."""
        return self.directory / "replication.json"

    @property
    def peer_bundle(self) -> Path:
        """This node's pair certificate followed by its key: HAProxy's ``crt`` for the peers."""
        return self.directory / "peer.pem"

    @property
    def peer_authority(self) -> Path:
        """The pair's authority, the only one the peers trust: a copy of the pair's own."""
        return self.directory / "peer-ca.pem"

    @property
    def log(self) -> Path:
        """HAProxy's log lines (connections, health changes): the workers' standard output."""
        return self.data_dir / "logs" / "haproxy.log"

    @property
    def output(self) -> Path:
        """The master's own messages: start-up, reloads and their alerts."""
        return self.data_dir / "logs" / "haproxy.out"
