"""Health checks: whether each real server is fit for clients.

``verdict`` counts passes and failures the way HAProxy does, ``probes`` builds requests and judges
replies, both pure; ``monitor`` is the only part that touches the network, processes and time.
"""

from __future__ import annotations

from balancer.health.monitor import Monitor, Pace, probe
from balancer.health.probes import Outcome
from balancer.health.verdict import Verdict

__all__ = ["Monitor", "Outcome", "Pace", "Verdict", "probe"]
