"""A sampling profiler in every Python process of an appliance the control-plane bench starts:
`balancer serve` and the built-in engine it starts (``bench/hook/sitecustomize.py`` installs it
when ``BENCH_SAMPLES`` names a directory). The bench turns it on (SIGUSR1) for one step and off
(SIGUSR2); each process then writes what it saw to ``<pid>.json`` in that directory.

It samples every thread's stack, not only the one that turned it on as cProfile would: FastAPI
runs the API's plain functions in a pool of threads, and the saves are among them."""

from __future__ import annotations

import collections
import json
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType

INTERVAL = 0.002  # seconds between samples
TOP = 12
# A thread whose innermost frame is in one of these waits for work: it is not counted.
WAITING = ("threading.py", "queue.py", "selectors.py", "runners.py", "uvloop/__init__.py",
           "concurrent/futures/thread.py")  # fmt: skip


def where(frame: FrameType) -> str:
    code = frame.f_code
    path = code.co_filename
    # Our own code by module path, the rest by package: enough to tell them apart.
    short = path.partition("/balancer/")[2] or path.partition("site-packages/")[2]
    return f"{short or re.sub(r'^.*/lib/python3[.0-9]*/', '', path)}:{code.co_name}"


class Sampler:
    def __init__(self, out: Path) -> None:
        self.out = out
        self.on = threading.Event()
        self.ticks = 0
        self.busy_ticks = 0
        self.inner: collections.Counter[str] = collections.Counter()
        self.ours: collections.Counter[str] = collections.Counter()
        self.started = 0.0

    def start(self, *_: object) -> None:
        self.ticks = self.busy_ticks = 0
        self.inner.clear()
        self.ours.clear()
        self.started = time.monotonic()
        self.on.set()

    def stop(self, *_: object) -> None:
        self.on.clear()
        found = {
            "seconds": time.monotonic() - self.started,
            "ticks": self.ticks,
            "busy_ticks": self.busy_ticks,
            "inner": self.inner.most_common(TOP),
            # Without the frames every request runs under: the daemon's and the command's.
            "ours": [
                (name, count)
                for name, count in self.ours.most_common(TOP + 8)
                if not name.startswith(("daemon.py", "cli/", "__main__"))
            ][:TOP],
        }
        self.out.write_text(json.dumps(found))

    def run(self) -> None:
        me = threading.get_ident()
        while True:
            self.on.wait()
            self.ticks += 1
            busy = False
            for ident, frame in sys._current_frames().items():
                if ident == me or where(frame).partition(":")[0].endswith(WAITING):
                    continue
                busy = True
                self.inner[where(frame)] += 1
                seen: set[str] = set()
                walk: FrameType | None = frame
                while walk is not None:
                    if "/balancer/" in walk.f_code.co_filename:
                        seen.add(where(walk))
                    walk = walk.f_back
                self.ours.update(seen)
            self.busy_ticks += busy
            time.sleep(INTERVAL)


def install(directory: Path) -> None:
    sampler = Sampler(directory / f"{os.getpid()}.json")
    signal.signal(signal.SIGUSR1, sampler.start)
    signal.signal(signal.SIGUSR2, sampler.stop)
    threading.Thread(target=sampler.run, daemon=True).start()
