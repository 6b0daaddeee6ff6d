"""Logs are rotated by size, copied and emptied in place, while their writers keep writing: a
logging handler of this process and another process whose standard output is the file, as
HAProxy's workers' and keepalived's are."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path

from balancer import logs

LIMIT = 500


def test_a_log_past_its_size_is_copied_and_emptied_and_its_writers_carry_on(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "logs"
    logs.setup(folder / "balancer.log", "appliance")
    # A writer in another process, its standard output opened for appending by its parent.
    child_code = "import sys\nfor line in sys.stdin:\n    print('child', line.strip(), flush=True)"
    with (folder / "haproxy.log").open("ab") as out:
        child = subprocess.Popen(
            [sys.executable, "-c", child_code], stdin=subprocess.PIPE, stdout=out, text=True
        )
    assert child.stdin is not None
    try:
        small = folder / "small.log"
        small.write_text("under the limit\n")
        log = logging.getLogger("test.rotation")

        def said(line: str) -> None:
            assert child.stdin is not None
            child.stdin.write(line + "\n")
            child.stdin.flush()

        def until_written(path: Path, text: str) -> None:
            for _ in range(500):
                if text in path.read_text():
                    return
                time.sleep(0.01)
            raise AssertionError(f"never written to {path.name}: {text}")

        for n in range(40):
            log.warning("before %d", n)
            said(f"before {n}")
        until_written(folder / "haproxy.log", "child before 39")
        rotated = logs.rotate([folder], limit=LIMIT)
        assert rotated == [folder / "balancer.log", folder / "haproxy.log"]
        for name in ("balancer.log", "haproxy.log"):
            assert (folder / name).stat().st_size == 0
            assert "before 39" in (folder / f"{name}.1").read_text()
        assert small.read_text() == "under the limit\n"
        assert not (folder / "small.log.1").exists()

        log.warning("after")
        said("after")
        until_written(folder / "haproxy.log", "child after")
        for name in ("balancer.log", "haproxy.log"):
            written = (folder / name).read_bytes()
            # At the start of the emptied file: no hole of zeros where the old lines were.
            assert b"\0" not in written
            assert written.count(b"\n") == 1
            assert b"after" in written
        entries = list(logs.entries(folder / "balancer.log"))
        assert [entry["message"] for entry in entries] == ["after"]
    finally:
        child.stdin.close()
        child.wait(timeout=10)
        for handler in logging.getLogger().handlers:
            handler.close()
        logging.getLogger().handlers.clear()


def test_only_the_newest_copies_are_kept(tmp_path: Path) -> None:
    log = tmp_path / "engine.log"
    for n in range(7):
        log.write_text(f"generation {n}\n" * 100)
        assert logs.rotate([tmp_path], limit=LIMIT, keep=3) == [log]
    kept = sorted(path.name for path in tmp_path.iterdir())
    assert kept == ["engine.log", "engine.log.1", "engine.log.2", "engine.log.3"]
    for n, generation in ((1, 6), (2, 5), (3, 4)):
        assert (tmp_path / f"engine.log.{n}").read_text().startswith(f"generation {generation}\n")
