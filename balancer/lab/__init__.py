"""The lab: simulated PSM servers for ``make demo`` and the end-to-end tests.

Each server has an RDP stand-in (``rdp_service``), an HTTPS stand-in with the health endpoint
(``https_service``) and a mode (``server``); a lab process runs several and takes requests on a
control socket (``process``). ``rdp`` holds the pure RDP bytes an RDP-aware check can reuse.
"""

from balancer.lab.process import (
    default_specs,
    lab_status,
    run,
    run_lab,
    set_mode,
    stop_lab,
)
from balancer.lab.server import LabServerSpec, Mode

__all__ = [
    "LabServerSpec",
    "Mode",
    "default_specs",
    "lab_status",
    "run",
    "run_lab",
    "set_mode",
    "stop_lab",
]
