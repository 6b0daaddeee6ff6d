"""`balancer service-unit`: a unit systemd accepts, that runs this installation and leaves the
engine and keepalived running when the management service stops or restarts."""

from __future__ import annotations

import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BALANCER = Path(sys.executable).parent / "balancer"


def test_the_unit_runs_this_installation_and_systemd_accepts_it(tmp_path: Path) -> None:
    made = subprocess.run(
        [str(BALANCER), "service-unit", "--dir", str(tmp_path / "data")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = made.stdout.splitlines()
    assert f"ExecStart={BALANCER} serve --dir {tmp_path / 'data'}" in lines
    assert "KillMode=process" in lines
    assert f"LimitNOFILE={resource.getrlimit(resource.RLIMIT_NOFILE)[1]}" in lines
    assert "WantedBy=multi-user.target" in lines
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed: the unit's syntax is not checked")
    unit = tmp_path / "balancer.service"
    unit.write_text(made.stdout)
    checked = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    # It speaks of other units of this machine too; of ours, nothing.
    assert checked.returncode == 0, checked.stderr
    assert "balancer.service" not in checked.stdout + checked.stderr


def test_it_is_refused_for_another_appliance() -> None:
    refused = subprocess.run(
        [str(BALANCER), "--url", "https://127.0.0.1:1", "service-unit"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2
    assert "service-unit acts on this machine only" in refused.stderr
    assert "Traceback" not in refused.stderr
