"""An HA pair as the issue's tests and the bench meet it: two appliance nodes (each a real
``balancer serve`` with a data directory of its own), two lab PSM servers and a client, each in
a network namespace of its own on one switch in 198.18.0.0/15 (``tests.netns``).

``topology(root, engine)`` starts it all and yields a ``Topology``; leaving the block stops
every process by its PID and deletes every namespace, however the block ends. On it:

- ``pair()`` pairs the nodes from the Primary with ``balancer ha pair``, as an operator does;
- ``commit_psm()`` commits the CyberArk PSM preset on the Primary, its VIPs in 198.18.1.x;
- ``client.open()`` opens an RDP session to a VIP from the client's namespace and says which
  PSM server answered, and ``carrier()`` which node carries that session; ``client.open_all()``
  opens one from each of many source addresses at once (``SOURCES``, on the client's eth0 too,
  each a distinct client to persistence), and ``carriers()`` says which node carries each;
- ``client.watch()`` connects again and again in the background and keeps every outcome, to
  time a failover or to show that nothing was refused;
- a node's ``cut()`` pulls its cable on the switch, ``kill_engine()`` kills its engine, and
  ``stop()`` stops it as ``balancer stop --engine`` does; ``fail_over()`` does one of those to
  the Active node while the client watches, and says how long until the other node answered.

``python -m tests.ha.cluster`` is the client's side: it runs in the client's namespace and
answers one JSON request per line on standard input.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from balancer import users
from balancer.client import ApiError, Client, api_socket
from balancer.control import ControlError
from balancer.lab.process import lab_status, stop_lab
from balancer.store import Store
from tests.netns import PREFIX, Host, Network, ip, network

ROOT = Path(__file__).resolve().parents[2]
NODE_ADDRESSES = ("198.18.0.11", "198.18.0.12")
PSM_ADDRESSES = {"PSM1": "198.18.0.31", "PSM2": "198.18.0.32"}
CLIENT_ADDRESS = "198.18.0.51"
# More addresses of the client's, each a client of its own to persistence (which keys on the
# source address): 198.18.2.1 onwards, as many as a topology is given.
SOURCE_BASE = ipaddress.IPv4Address("198.18.2.1")
SOURCES = 20
RDP_VIP, WEB_VIP = "198.18.1.100", "198.18.1.101"
RDP_PORT, WEB_PORT = 3389, 443  # each host has a namespace of its own: the guide's ports
MANAGEMENT_PORT = 9443
PASSWORD = "the pair's appliance password"
# As tests/appliance.py's: the suite's workers start appliances at once, and on 2 cores one
# took over 30 s to answer.
START_TIMEOUT = 60.0
WAIT = 20.0  # bound on every wait for the pair: a VIP moves within about a second
POLL = 0.05
REPLY_TIMEOUT = 30.0
IN_FLIGHT = 50  # the client's attempts under way at once, at most


def wait_for(what: str, ready: Any, timeout: float = WAIT) -> Any:
    """Poll ``ready()`` until it gives something true (returned) or stops raising; fail after
    ``timeout`` with the last thing it said."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = ready()
            if last:
                return last
        except Exception as error:
            last = error
        time.sleep(POLL)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


# --- the nodes ---------------------------------------------------------------------------------


@dataclass
class Node:
    """One appliance: ``balancer serve`` in ``host``'s namespace, its WebUI and the pair's
    port on its own address, its API on the Unix socket in ``data_dir`` (which the test reaches
    from outside the namespace)."""

    label: str
    host: Host
    data_dir: Path
    engine: str
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return self.host.address

    @property
    def client(self) -> Client:
        return Client(api_socket(self.data_dir), user="tester", timeout=REPLY_TIMEOUT)

    def prepare(self) -> None:
        """A fresh data directory with the loadbalancer user's password set, as `balancer
        init` leaves it."""
        self.data_dir.mkdir(parents=True)
        with Store(self.data_dir / "balancer.db") as store:
            users.add_user(store, "loadbalancer", PASSWORD, author="tester")

    def start(self) -> None:
        self.launch()
        self.wait()

    def launch(self) -> None:
        """Start `balancer serve`; ``wait`` for it to answer."""
        out = (self.data_dir.parent / f"{self.label}.out").open("ab")
        err = (self.data_dir.parent / f"{self.label}.err").open("ab")
        with out, err:
            self.process = self.host.popen(
                sys.executable, "-m", "balancer", "serve", "--dir", str(self.data_dir),
                "--listen", self.address, "--https-port", str(MANAGEMENT_PORT),
                "--engine", self.engine,
                cwd=ROOT, stdout=out, stderr=err,
            )  # fmt: skip

    def wait(self) -> None:
        wait_for(f"{self.label}'s API", self._listening, START_TIMEOUT)
        wait_for(f"{self.label}'s engine", self.engine_pid, START_TIMEOUT)

    def _listening(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"{self.label}: balancer serve exited with {self.process.poll()}")
        return bool(self.client.get("/status"))

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def fingerprint(self) -> str:
        """The SHA-256 fingerprint of its WebUI's certificate, as `balancer serve` printed it."""
        said = (self.data_dir.parent / f"{self.label}.out").read_text()
        marker = "sha256 Fingerprint="
        return said.rsplit(marker, 1)[1].split()[0]

    def cli(
        self, *args: str, stdin: str = "", timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """The `balancer` command, run on this node (inside its namespace)."""
        env = {**os.environ, "BALANCER_DIR": str(self.data_dir)}
        return subprocess.run(
            self.host.command(sys.executable, "-m", "balancer", *args), input=stdin,
            env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip

    def engine_pid(self) -> int | None:
        pid = self.client.get("/status")["engine"].get("pid")
        return None if pid is None else int(pid)

    @functools.cached_property
    def mac(self) -> str:
        shown = ip("-n", self.host.name, "-o", "link", "show", "dev", "eth0")
        return shown.split("link/ether", 1)[1].split()[0]

    def holds(self, vip: str) -> bool:
        return vip in self.host.addresses()

    def carried(self, service_port: int = RDP_PORT) -> set[tuple[str, int]]:
        """The (client address, client port) of every connection to ``service_port``
        established here."""
        listed = self.host.run("ss", "-Htn", "state", "established", "sport", "=",
                               f":{service_port}")  # fmt: skip
        if listed.returncode != 0:
            raise AssertionError(f"ss on {self.label}: {listed.stderr.strip()}")
        found = set()
        for line in listed.stdout.splitlines():
            address, _, port = line.split()[-1].rpartition(":")
            found.add((address.strip("[]"), int(port)))
        return found

    def persistence(self, service: str = "CyberArk-PSM") -> dict[str, str]:
        """Client address -> server label, as `balancer persistence list` on this node says."""
        done = self.cli("persistence", "list", service)
        if done.returncode != 0:
            raise AssertionError(f"balancer persistence list on {self.label}: {done.stderr}")
        return {
            line.split()[0]: line.split()[2] for line in done.stdout.splitlines() if "->" in line
        }

    def pair_view(self) -> dict[str, Any] | None:
        """This node's view of the pair (GET /api/v1/ha), None while it stands alone."""
        found: dict[str, Any] | None = self.client.get("/ha").get("pair")
        return found

    def state(self) -> str | None:
        """Active, Passive or Fault as this node's keepalived says, None standalone."""
        view = self.pair_view()
        return None if view is None else str(view["this"]["state"])

    def keepalived_running(self) -> bool:
        """Whether a keepalived runs in this node's namespace."""
        for pid in ip("netns", "pids", self.host.name).split():
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/comm").read_text().strip() == "keepalived":
                    return True
        return False

    # --- what the tests do to a node -------------------------------------------------------

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Its management service frozen (SIGSTOP) for the block: nothing restarts its engine;
        keepalived and the engine run on."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(self.process.pid, signal.SIGCONT)

    def cut(self) -> None:
        self.host.cut()

    def heal(self) -> None:
        self.host.heal()

    @contextlib.contextmanager
    def kill_engine(self) -> Iterator[None]:
        """Kill the engine outright (SIGKILL), its management paused until the block ends so
        that nothing restarts the engine before keepalived finds it dead."""
        pid = self.engine_pid()
        assert pid is not None, f"{self.label} runs no engine"
        with self.paused():
            os.kill(pid, signal.SIGKILL)
            yield

    def stop(self) -> None:
        """Stop the node as `balancer stop --engine` does: keepalived, then the engine, then
        the management service."""
        self.ask_to_stop()
        self.stopped()

    def ask_to_stop(self) -> None:
        if self.running():
            with contextlib.suppress(ApiError):
                self.client.post("/shutdown", engine="true")

    def stopped(self) -> None:
        """Wait for `balancer serve` to end (killed if it takes too long)."""
        if self.process is None or self.process.poll() is not None:
            return
        try:
            self.process.wait(START_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# --- the lab's PSM servers ---------------------------------------------------------------------

LAB = """
import sys
from pathlib import Path
from balancer.lab.process import run
from balancer.lab.server import LabServerSpec
name, ip, rdp, web, where = sys.argv[1:]
run([LabServerSpec(name, ip, int(rdp), int(web))], Path(where))
"""


@dataclass
class Psm:
    name: str
    host: Host
    lab_dir: Path

    def start(self) -> None:
        """Start the server; ``wait`` for it to listen."""
        with (self.lab_dir.parent / f"{self.name}.err").open("ab") as err:
            self.host.popen(
                sys.executable, "-c", LAB, self.name, self.host.address, str(RDP_PORT),
                str(WEB_PORT), str(self.lab_dir), stdout=subprocess.DEVNULL, stderr=err,
            )  # fmt: skip

    def wait(self) -> None:
        wait_for(f"lab server {self.name}", lambda: asyncio.run(lab_status(self.lab_dir)))

    def stop(self) -> None:
        with contextlib.suppress(OSError, ControlError):  # not started, or gone already
            asyncio.run(stop_lab(self.lab_dir))

    def connections(self) -> int:
        """RDP connections it accepted so far."""
        servers = asyncio.run(lab_status(self.lab_dir))
        return int(servers[self.name]["connections"]["rdp"]["total"])


# --- the client --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """One attempt of the client's: when it began and ended (time.monotonic, one clock for
    every namespace), the PSM server that answered, or what went wrong (refused, reset,
    timeout...)."""

    start: float
    end: float
    server: str | None
    error: str | None
    via: str | None  # the MAC address the client sent to, as its ARP cache had it after
    connected: bool  # whether its TCP connection was made (a failure after is a lost session)

    @property
    def ok(self) -> bool:
        return self.server is not None


@dataclass
class ClientHost:
    """The client's side, a process in the client's namespace answering JSON lines."""

    host: Host
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = self.host.popen(
            sys.executable, "-m", "tests.ha.cluster", self.host.address,
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )  # fmt: skip

    def close(self) -> None:
        """Its pipes closed: the process then ends, or tests.netns ends it."""
        if self.process is not None:
            for pipe in (self.process.stdin, self.process.stdout):
                if pipe is not None:
                    pipe.close()

    def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        process = self.process
        assert process is not None
        assert process.stdin is not None
        assert process.stdout is not None
        process.stdin.write(json.dumps(request).encode() + b"\n")
        process.stdin.flush()
        # One line answers each request: nothing is left in the reader's buffer to miss.
        ready, _, _ = select.select([process.stdout], [], [], REPLY_TIMEOUT)
        if not ready:
            raise AssertionError(f"the client's side did not answer {request} in {REPLY_TIMEOUT} s")
        line = process.stdout.readline()
        if not line:
            raise AssertionError(f"the client's side ended ({process.poll()}) on {request}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def open(
        self, vip: str = RDP_VIP, port: int = RDP_PORT, timeout: float = 5.0, source: str = ""
    ) -> Session:
        """An RDP session through ``vip`` from ``source`` (the client's own address by
        default), kept open until ``close``."""
        (session,) = self.open_all([source or self.host.address], vip, port, timeout)
        return session

    def open_all(
        self, sources: Sequence[str], vip: str = RDP_VIP, port: int = RDP_PORT,
        timeout: float = 5.0,
    ) -> list[Session]:  # fmt: skip
        """An RDP session through ``vip`` from each of ``sources``, all opened at once, in
        their order; every one is closed again if any fails."""
        said = self.ask(
            {"op": "open", "vip": vip, "port": port, "timeout": timeout, "sources": sources}
        )
        answers = list(zip(sources, said["sessions"], strict=True))
        opened = [
            Session(self, int(one["id"]), str(one["server"]), source, int(one["port"]), port)
            for source, one in answers
            if one["ok"]
        ]
        failed = [f"{source}: {one['error']}" for source, one in answers if not one["ok"]]
        if failed:
            for session in opened:
                session.close()
            raise AssertionError(f"no RDP session through {vip}:{port} from {'; '.join(failed)}")
        return opened

    def servers(self, sources: Sequence[str], vip: str = RDP_VIP) -> dict[str, str]:
        """Source address -> the PSM server a new RDP session from it through ``vip`` reaches
        (all opened at once, then closed)."""
        sessions = self.open_all(sources, vip)
        for session in sessions:
            session.close()
        return {session.source: session.server for session in sessions}

    def lands(self, vip: str = RDP_VIP, port: int = RDP_PORT) -> str:
        """The PSM server a new RDP session through ``vip`` reaches (closed at once)."""
        with self.open(vip, port) as session:
            return session.server

    def signs_in(self, node: Node, user: str, password: str, code: str | None = None) -> bool:
        """Whether ``user`` signs in to ``node``'s WebUI with ``password`` from this client,
        and ``code`` at the second step if given."""
        url = f"https://{node.address}:{MANAGEMENT_PORT}"
        asked = {"op": "sign_in", "url": url, "user": user, "password": password, "code": code}
        return bool(self.ask(asked)["signed_in"])

    def watch(
        self, vip: str = RDP_VIP, port: int = RDP_PORT, timeout: float = 0.2, pause: float = 0.01
    ) -> None:
        """Start connecting to ``vip`` again and again until ``stop_watching``: a new attempt
        every ``pause`` s, each given up after ``timeout``."""
        said = self.ask(
            {"op": "watch", "vip": vip, "port": port, "timeout": timeout, "pause": pause}
        )
        assert said["ok"], said

    def outcomes(self) -> list[Outcome]:
        """Every attempt of the watch so far."""
        return [Outcome(**found) for found in self.ask({"op": "outcomes"})["outcomes"]]

    def stop_watching(self) -> list[Outcome]:
        return [Outcome(**found) for found in self.ask({"op": "unwatch"})["outcomes"]]

    def first_success_after(self, since: float, timeout: float = WAIT) -> Outcome:
        """The first attempt begun after ``since`` that reached a PSM server."""

        def found() -> Outcome | None:
            return next((o for o in self.outcomes() if o.start >= since and o.ok), None)

        result: Outcome = wait_for("a connection through the VIP", found, timeout)
        return result


@dataclass
class Session:
    client: ClientHost
    id: int
    server: str
    source: str  # the client's address it was opened from
    local_port: int  # the client's end: what a node's ss shows as the peer's port
    service_port: int

    def close(self) -> None:
        self.client.ask({"op": "close", "id": self.id})

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


# --- the whole topology ------------------------------------------------------------------------

# How the Active node is made to fail: its cable pulled (node death), its engine killed while
# its management is paused (so nothing restarts it first), or stopped as an operator does.
FAILURES = {"link": "node death (link cut)", "engine": "engine death", "stop": "graceful stop"}


@dataclass(frozen=True)
class Failover:
    failure: str  # a key of FAILURES
    before: Node  # the node that was Active
    after: Node  # the node that took the VIPs
    at: float  # when the failure was made (time.monotonic)
    seconds: float  # from the failure to the end of the first connection through ``after``
    outcomes: list[Outcome]  # every attempt of the client's meanwhile

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]

    def said(self, outcome: Outcome) -> str:
        """An attempt in words, for a failed assertion."""
        to = {self.before.mac: self.before.label, self.after.mac: self.after.label}
        return (
            f"{outcome.error or outcome.server} from {outcome.start - self.at:+.3f} s to "
            f"{outcome.end - self.at:+.3f} s, sent to {to.get(outcome.via or '', outcome.via)}"
        )


@dataclass
class Topology:
    net: Network
    nodes: list[Node]
    psms: list[Psm]
    client: ClientHost
    engine: str
    sources: tuple[str, ...] = ()  # the client's addresses beside its own, a client each
    vips: tuple[str, ...] = (RDP_VIP, WEB_VIP)

    @property
    def primary(self) -> Node:
        return self.nodes[0]

    @property
    def secondary(self) -> Node:
        return self.nodes[1]

    def pair(self, **options: str) -> subprocess.CompletedProcess[str]:
        """Pair from the Primary with `balancer ha pair`, confirming the Secondary's
        fingerprint and giving its password on standard input; the command's outcome."""
        args = {
            "local": self.primary.address,
            "peer": self.secondary.address,
            "fingerprint": self.secondary.fingerprint,
            "password": PASSWORD,
            **options,
        }
        done = self.primary.cli(
            "ha", "pair", "--local", args["local"], "--peer", args["peer"],
            "--fingerprint", args["fingerprint"], "--password-stdin", stdin=args["password"],
        )  # fmt: skip
        return done

    def pair_with_psm(self) -> None:
        """The pair with the PSM preset committed on the Primary and live on both nodes."""
        done = self.pair()
        assert done.returncode == 0, f"balancer ha pair: {done.stdout}{done.stderr}"
        revision = self.commit_psm()["revision"]
        wait_for(
            "the commit live on the Secondary",
            lambda: self.secondary.client.get("/status")["engine"]["revision"] == revision,
        )

    def each(self, first: Callable[[Node], None], then: Callable[[Node], None]) -> None:
        """``first`` on every node, then ``then`` on every node: both start (or stop) at once."""
        for node in self.nodes:
            first(node)
        for node in self.nodes:
            then(node)

    def commit_psm(self, node: Node | None = None) -> dict[str, Any]:
        """The PSM preset on ``node`` (the Primary), health checks quick, committed; the
        commit's answer."""
        client = (node or self.primary).client
        client.post(
            "/presets/psm",
            {
                "rdp_vip": RDP_VIP,
                "web_vip": WEB_VIP,
                "servers": [[name, address] for name, address in PSM_ADDRESSES.items()],
                "rdp_port": RDP_PORT,
                "web_port": WEB_PORT,
            },
        )
        for service in ("CyberArk-PSM", "CyberArk-PSM-Web"):
            # The guide's 4 s interval works; a short one keeps the test quick.
            client.patch(
                f"/virtual-services/{service}", {"health_check": {"interval": 0.2, "timeout": 1}}
            )
        answer: dict[str, Any] = client.post("/commit")
        return answer

    def owners(self, vip: str = RDP_VIP) -> list[Node]:
        return [node for node in self.nodes if node.holds(vip)]

    def owner(self, vip: str = RDP_VIP) -> Node:
        """The one node that holds ``vip``, once exactly one does."""

        def one() -> Node | None:
            found = self.owners(vip)
            return found[0] if len(found) == 1 else None

        node: Node = wait_for(f"{vip} on one node", one)
        return node

    def taken_by(self, node: Node) -> None:
        """Wait until ``node`` alone holds every VIP (just after the other's link is cut, the
        other may still hold them, alone, for a moment); a timeout says who holds what."""

        def alone() -> bool:
            held = {vip: [owner.label for owner in self.owners(vip)] for vip in self.vips}
            if any(labels != [node.label] for labels in held.values()):
                raise AssertionError(f"held by {held}")
            return True

        wait_for(f"{node.label} alone holding the VIPs", alone)

    def other(self, node: Node) -> Node:
        return self.nodes[1 - self.nodes.index(node)]

    def partition(self) -> None:
        """Cut the nodes off from each other while both stay up: each drops every IP packet it
        sends to the other's address, so keepalived's adverts and the management link stop,
        while ARP and the clients' traffic go on; ``heal_partition`` ends it. (The packets go
        to a queue that holds none: this kernel has tc's classes but not its drop action.)"""
        for node in self.nodes:
            peer = self.other(node).address
            for argv in (
                ["qdisc", "add", "dev", "eth0", "root", "handle", "1:", "htb", "default", "1"],
                ["class", "add", "dev", "eth0", "parent", "1:", "classid", "1:1", "htb", "rate",
                 "10gbit"],
                ["class", "add", "dev", "eth0", "parent", "1:", "classid", "1:2", "htb", "rate",
                 "10gbit"],
                ["qdisc", "add", "dev", "eth0", "parent", "1:2", "pfifo", "limit", "0"],
                ["filter", "add", "dev", "eth0", "parent", "1:", "protocol", "ip", "prio", "1",
                 "u32", "match", "ip", "dst", f"{peer}/32", "flowid", "1:2"],
            ):  # fmt: skip
                _tc(node, *argv)

    def heal_partition(self) -> None:
        for node in self.nodes:
            _tc(node, "qdisc", "del", "dev", "eth0", "root")

    def through(self, outcome: Outcome) -> Node | None:
        """The node the client sent ``outcome``'s attempt to."""
        return next((node for node in self.nodes if node.mac == outcome.via), None)

    def carrier(self, session: Session) -> Node:
        """The node the client's session goes through."""
        (node,) = self.carriers([session])
        return node

    def carriers(self, sessions: Sequence[Session]) -> list[Node]:
        """The node each session goes through, in their order."""
        port = sessions[0].service_port
        carried = {node.label: node.carried(port) for node in self.nodes}
        found = []
        for session in sessions:
            end = (session.source, session.local_port)
            by = [node for node in self.nodes if end in carried[node.label]]
            assert len(by) == 1, f"{end} is carried by {[n.label for n in by]}"
            found.extend(by)
        return found

    def settled(self) -> Node:
        """Wait until one node is Active, holding every VIP, and the other is Passive; the
        Active one."""
        owner = self.ready()
        other = self.other(owner)
        wait_for(f"{other.label} Passive", lambda: other.state() == "passive")
        wait_for(f"{owner.label} Active", lambda: owner.state() == "active")
        # And each has heard the other since (the link asks every second).
        wait_for(f"{owner.label} hearing {other.label} Passive", lambda: _peer(owner) == "passive")
        wait_for(f"{other.label} hearing {owner.label} Active", lambda: _peer(other) == "active")
        return owner

    def fail_over(self, failure: str, timeout: float = 0.1) -> Failover:
        """Make the Active node fail as ``failure`` says while the client connects to the RDP
        VIP again and again, each attempt given up after ``timeout``; return once the other node
        answers and the failed one has dropped the VIPs, with the failed node put right again
        (healed, its engine restarted, or started) and Passive."""
        owner = self.settled()
        other = self.other(owner)
        self.client.watch(timeout=timeout)
        try:
            self.client.first_success_after(time.monotonic())
            with contextlib.ExitStack() as undo:
                began = time.monotonic()
                if failure == "link":
                    owner.cut()
                    undo.callback(owner.heal)
                elif failure == "engine":
                    undo.enter_context(owner.kill_engine())
                elif failure == "stop":
                    undo.callback(owner.start)
                    owner.stop()
                else:
                    raise ValueError(f"failure: {failure!r} is not one of {', '.join(FAILURES)}")
                first = self.first_through(other, began)
                wait_for(
                    f"{owner.label} to drop the VIPs",
                    lambda: not any(owner.holds(vip) for vip in self.vips),
                )
                # A few attempts more, so that anything refused late is seen too.
                self.client.first_success_after(time.monotonic())
        finally:
            outcomes = self.client.stop_watching()
        wait_for(f"{owner.label}'s engine", owner.engine_pid)
        assert self.settled() is other, f"{owner.label} took the VIPs back"
        return Failover(failure, owner, other, began, first.end - began, outcomes)

    def first_through(self, node: Node, since: float) -> Outcome:
        """The client's first attempt begun after ``since`` that succeeded through ``node``."""

        def found() -> Outcome | None:
            return next(
                (o for o in self.client.outcomes()
                 if o.start >= since and o.ok and self.through(o) is node),
                None,
            )  # fmt: skip

        first: Outcome = wait_for(f"a connection through {node.label}", found)
        return first

    def ready(self) -> Node:
        """Wait until every VIP is on one node and answers from the client, both nodes running
        the same revision; the owner."""
        owner = self.owner(self.vips[0])
        for vip in self.vips[1:]:
            assert self.owner(vip) is owner, f"{vip} is not on {owner.label} with the others"
        wait_for("the PSM servers through the VIP", lambda: self.client.lands())
        return owner


def _tc(node: Node, *argv: str) -> None:
    done = subprocess.run(["tc", "-n", node.host.name, *argv], capture_output=True, text=True,
                          timeout=10.0, check=False)  # fmt: skip
    if done.returncode != 0:
        raise AssertionError(f"tc {' '.join(argv)} on {node.label}: {done.stderr.strip()}")


def _peer(node: Node) -> str | None:
    """The peer's state as ``node`` last heard it."""
    view = node.pair_view()
    return None if view is None or view["peer"] is None else str(view["peer"]["state"])


@contextlib.contextmanager
def topology(root: Path, engine: str = "builtin", sources: int = SOURCES) -> Iterator[Topology]:
    """Two standalone nodes running ``engine``, two PSM servers and a client with ``sources``
    addresses more, all started. The nodes are called n1 (to be the Primary) and n2."""
    root.mkdir(parents=True, exist_ok=True)
    with network() as net:
        nodes = [
            Node(f"n{number}", net.host(f"n{number}", address), root / f"n{number}", engine)
            for number, address in enumerate(NODE_ADDRESSES, 1)
        ]
        psms = [Psm(name, net.host(name.lower(), ip), root / name) for name, ip in
                PSM_ADDRESSES.items()]  # fmt: skip
        client = ClientHost(net.host("client", CLIENT_ADDRESS))
        addresses = tuple(str(SOURCE_BASE + number) for number in range(sources))
        for address in addresses:
            ip("-n", client.host.name, "addr", "add", f"{address}/{PREFIX}", "dev", "eth0")
        found = Topology(net, nodes, psms, client, engine, addresses)
        try:
            for psm in psms:
                psm.start()
            for node in nodes:
                node.prepare()
            found.each(Node.launch, Node.wait)
            for psm in psms:
                psm.wait()
            client.start()
            yield found
        finally:
            # The nodes first, gracefully: their keepalived gives the VIPs up, their engines
            # stop; tests.netns then ends whatever is left, by PID, and deletes the namespaces.
            for node in nodes:
                with contextlib.suppress(Exception):
                    node.ask_to_stop()
            for node in nodes:
                with contextlib.suppress(Exception):
                    node.stopped()
            for psm in psms:
                psm.stop()
            client.close()


# --- the client's side, in its namespace -------------------------------------------------------


def _kind(error: BaseException) -> str:
    if isinstance(error, ConnectionRefusedError):
        return "refused"
    if isinstance(error, ConnectionResetError):
        return "reset"
    if isinstance(error, TimeoutError):
        return "timeout"
    if isinstance(error, asyncio.IncompleteReadError):
        return "closed"
    return f"{type(error).__name__}: {error}"


def _hardware(vip: str) -> str | None:
    """The MAC address this namespace sends ``vip``'s packets to now: the node that holds it,
    as its last gratuitous ARP said."""
    for line in Path("/proc/net/arp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[0] == vip and fields[3] != "00:00:00:00:00:00":
            return fields[3]
    return None


class _Side:
    """What the client's process keeps: its open sessions and the watch's outcomes."""

    def __init__(self, source: str) -> None:
        from balancer.lab.clients import RdpSession

        self.source = source
        self.session = RdpSession
        self.sessions: dict[int, Any] = {}
        self.outcomes: list[dict[str, Any]] = []
        self.watching: asyncio.Task[None] | None = None
        self.unwatched = False
        self.count = 0

    async def attempt(
        self, vip: str, port: int, timeout: float, source: str = ""
    ) -> tuple[Any, dict[str, Any]]:
        start = time.monotonic()
        connected = False
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(
                    vip, port, local_addr=(source or self.source, 0)
                )
                connected = True
                session = self.session(reader, writer)
                await session.greet()
        except (OSError, TimeoutError, asyncio.IncompleteReadError, RuntimeError) as error:
            found = {
                "start": start,
                "end": time.monotonic(),
                "server": None,
                "error": _kind(error),
                "via": _hardware(vip),
                "connected": connected,
            }
            return None, found
        found = {
            "start": start,
            "end": time.monotonic(),
            "server": session.name,
            "error": None,
            "via": _hardware(vip),
            "connected": True,
        }
        return session, found

    def keep(self, session: Any, found: dict[str, Any]) -> dict[str, Any]:
        """An opened session kept until closed, by its id; or why it failed."""
        if session is None:
            return {"ok": False, "error": found["error"]}
        self.count += 1
        self.sessions[self.count] = session
        port = session.writer.get_extra_info("sockname")[1]
        return {"ok": True, "id": self.count, "server": session.name, "port": port}

    async def watch(self, vip: str, port: int, timeout: float, pause: float) -> None:
        """A new attempt every ``pause`` s, whether the ones before have ended or not (at most
        IN_FLIGHT at once): a takeover is seen within ``pause``, not after an attempt sent into
        the gap has waited out its ``timeout``."""
        running: set[asyncio.Task[None]] = set()
        # Stopped by a flag, not by cancelling: a cancellation that met an attempt's time limit
        # (Python 3.11's wait_for) was lost once, and the watch went on for ever.
        while not self.unwatched:
            if len(running) < IN_FLIGHT:
                task = asyncio.create_task(self.once(vip, port, timeout))
                running.add(task)
                task.add_done_callback(running.discard)
            await asyncio.sleep(pause)
        await asyncio.gather(*running)  # each has its time limit

    async def once(self, vip: str, port: int, timeout: float) -> None:
        session, found = await self.attempt(vip, port, timeout)
        self.outcomes.append(found)  # in the order they end
        if session is not None:
            await session.close()

    async def answer(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request["op"]
        if op == "open":
            opened = await asyncio.gather(
                *(self.attempt(request["vip"], request["port"], request["timeout"], source)
                  for source in request["sources"])
            )  # fmt: skip
            return {"ok": True, "sessions": [self.keep(*one) for one in opened]}
        if op == "sign_in":
            return await _sign_in(
                request["url"], request["user"], request["password"], request["code"]
            )
        if op == "close":
            await self.sessions.pop(request["id"]).close()
            return {"ok": True}
        if op == "watch":
            self.outcomes = []
            self.unwatched = False
            self.watching = asyncio.create_task(
                self.watch(request["vip"], request["port"], request["timeout"], request["pause"])
            )
            return {"ok": True}
        if op == "outcomes":
            return {"ok": True, "outcomes": self.outcomes}
        if op == "unwatch":
            if self.watching is not None:
                self.unwatched = True
                await self.watching  # its attempt has a time limit
            return {"ok": True, "outcomes": self.outcomes}
        return {"ok": False, "error": f"op: {op!r} is unknown"}


async def _sign_in(url: str, user: str, password: str, code: str | None) -> dict[str, Any]:
    """Sign in to the WebUI at ``url`` as a browser does: the form, its CSRF token, the post;
    then, with ``code``, the second step's form and its post."""
    import httpx

    from tests.webapp import csrf_of

    # The node's own certificate: the test trusts whatever it shows, the point is the password.
    async with httpx.AsyncClient(base_url=url, verify=False, timeout=REPLY_TIMEOUT) as browser:
        form = await browser.get("/lbadmin/sign-in")
        posted = await browser.post(
            "/lbadmin/sign-in",
            data={"username": user, "password": password, "csrf_token": csrf_of(form.text)},
        )
        if code is not None:
            form = await browser.get("/lbadmin/sign-in")
            posted = await browser.post(
                "/lbadmin/sign-in", data={"code": code, "csrf_token": csrf_of(form.text)}
            )
    return {
        "ok": True,
        "status": posted.status_code,
        "signed_in": "balancer_session" in posted.cookies,
    }


async def _serve(source: str) -> None:
    side = _Side(source)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        answer = await side.answer(json.loads(line))
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    asyncio.run(_serve(sys.argv[1]))
