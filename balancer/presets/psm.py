"""The CyberArk PSM preset: the guide's two virtual services in one action.

VIP 1, CyberArk-PSM: RDP on 3389; VIP 2, CyberArk-PSM-Web: the HTML5 gateway on 443. Both
Layer 7 TCP mode with source-IP persistence, checked by Negotiate HTTPS GET /psm/api/health
expecting PASS on port 443 (the RDP service does not speak HTTP). ``recommended`` adds what
CyberArk itself recommends beyond the guide: least connections, and a TCP check of the service
port alongside the HTTPS one, so a server whose IIS says PASS while RDS is stuck gets no users.
"""

from __future__ import annotations

from typing import Any

from balancer.configuration import add_virtual_service
from balancer.model import Config

RDP_LABEL = "CyberArk-PSM"
WEB_LABEL = "CyberArk-PSM-Web"
RDP_PORT = 3389
WEB_PORT = 443
HEALTH_PATH = "/psm/api/health"
HEALTH_EXPECT = "PASS"


def psm_services(
    rdp_vip: str,
    web_vip: str,
    servers: list[tuple[str, str]],
    *,
    recommended: bool = False,
    rdp_port: int = RDP_PORT,
    web_port: int = WEB_PORT,
    check_port: int | None = None,
) -> list[dict[str, Any]]:
    """The two virtual services for PSM ``servers`` given as (label, ip) pairs."""
    check = {
        "type": "https",
        "method": "GET",
        "path": HEALTH_PATH,
        "expect": HEALTH_EXPECT,
        "port": check_port or web_port,
        "also_check_service_port": recommended,
    }

    def service(label: str, vip: str, port: int) -> dict[str, Any]:
        return {
            "label": label,
            "ip": vip,
            "ports": str(port),
            "protocol": "tcp",
            "balancing": "least_connections" if recommended else "round_robin",
            "persistence": {"mode": "source_ip"},
            "health_check": check,
            "real_servers": [{"label": name, "ip": ip, "port": port} for name, ip in servers],
        }

    return [service(RDP_LABEL, rdp_vip, rdp_port), service(WEB_LABEL, web_vip, web_port)]


def add_psm(config: Config, **arguments: Any) -> Config:
    for service in psm_services(**arguments):
        config = add_virtual_service(config, service)
    return config
