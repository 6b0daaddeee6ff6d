"""Who may do what: the three roles, and the one table of the least role each route, WebUI page
and action, and command needs.

A role is a user's (``user.role``), or a narrower one an API key carries (``api_key.role``), or
a directory group's, given at sign-in and kept in the session. The Unix socket's caller (root)
is an administrator.
"""

from __future__ import annotations

from enum import StrEnum
from functools import lru_cache


class Role(StrEnum):
    """Ordered: each role may do what the ones before it may."""

    VIEWER = "viewer"  # reads everything but secrets; changes nothing
    OPERATOR = "operator"  # and drains, halts and brings online, commits what others saved
    ADMINISTRATOR = "administrator"  # everything

    @property
    def rank(self) -> int:
        return _ORDER.index(self)

    def __lt__(self, other: str) -> bool:
        return self.rank < Role(other).rank

    def __le__(self, other: str) -> bool:
        return self.rank <= Role(other).rank

    def __gt__(self, other: str) -> bool:
        return self.rank > Role(other).rank

    def __ge__(self, other: str) -> bool:
        return self.rank >= Role(other).rank


_ORDER = tuple(Role)


def narrower(first: Role, second: Role | None) -> Role:
    """The role that may do less: an API key's and its owner's (None: the owner's own)."""
    return first if second is None else min(first, second)


V, OP, A = Role.VIEWER, Role.OPERATOR, Role.ADMINISTRATOR

# The least role each route needs, by method and path as the application declares it (HEAD is
# asked as GET). None: no role is asked, as the gate admits the caller otherwise (the sign-in
# page, the WebUI's files, the HA peer with its pair certificate, pairing's HTTP Basic). A
# route missing here needs an administrator; tests/test_roles.py fails on it.
ROUTES: dict[tuple[str, str], Role | None] = {
    # The API's documentation.
    ("GET", "/api/v1/openapi.json"): V,
    ("GET", "/api/docs"): V,
    ("GET", "/docs/oauth2-redirect"): V,
    # The system: status, figures, logs and the audit trail; stopping the daemon.
    ("GET", "/api/v1/status"): V,
    ("GET", "/api/v1/system"): V,
    ("GET", "/api/v1/audit"): V,
    ("GET", "/api/v1/audit/verify"): V,
    ("GET", "/api/v1/logs"): V,
    ("POST", "/api/v1/shutdown"): A,
    # Virtual services and real servers: read by all, changed by administrators; drain, halt
    # and online by operators.
    ("GET", "/api/v1/virtual-services"): V,
    ("POST", "/api/v1/virtual-services"): A,
    ("GET", "/api/v1/virtual-services/{label}"): V,
    ("PATCH", "/api/v1/virtual-services/{label}"): A,
    ("DELETE", "/api/v1/virtual-services/{label}"): A,
    ("GET", "/api/v1/virtual-services/{label}/persistence"): V,
    ("DELETE", "/api/v1/virtual-services/{label}/persistence"): A,
    ("POST", "/api/v1/presets/psm"): A,
    ("GET", "/api/v1/virtual-services/{label}/real-servers"): V,
    ("POST", "/api/v1/virtual-services/{label}/real-servers"): A,
    ("PATCH", "/api/v1/virtual-services/{label}/real-servers/{server}"): A,
    ("DELETE", "/api/v1/virtual-services/{label}/real-servers/{server}"): A,
    ("POST", "/api/v1/virtual-services/{label}/real-servers/{server}/state"): OP,
    # Revisions: operators commit what others saved; a backup and a restore are Maintenance's.
    ("GET", "/api/v1/changes"): V,
    ("POST", "/api/v1/commit"): OP,
    ("GET", "/api/v1/config"): V,
    ("GET", "/api/v1/config/engine"): V,
    ("GET", "/api/v1/backup"): A,
    ("POST", "/api/v1/restore"): A,
    ("GET", "/api/v1/revisions"): V,
    # Users and API keys.
    ("GET", "/api/v1/users"): A,
    ("POST", "/api/v1/users"): A,
    ("PUT", "/api/v1/users/{name}/password"): A,
    ("PUT", "/api/v1/users/{name}/role"): A,
    ("DELETE", "/api/v1/users/{name}"): A,
    ("GET", "/api/v1/api-keys"): A,
    ("POST", "/api/v1/api-keys"): A,
    ("DELETE", "/api/v1/api-keys/{id}"): A,
    # Each user's own password, whatever their role (the current one is asked).
    ("PUT", "/api/v1/account/password"): V,
    # Two-factor sign-in: which roles must have it, and an administrator's reset.
    ("GET", "/api/v1/two-factor"): A,
    ("PUT", "/api/v1/two-factor"): A,
    ("DELETE", "/api/v1/users/{name}/two-factor"): A,
    # Alerts: Local Configuration's, with their secrets.
    ("GET", "/api/v1/alerts/channels"): A,
    ("POST", "/api/v1/alerts/channels"): A,
    ("PUT", "/api/v1/alerts/channels/{name}"): A,
    ("PATCH", "/api/v1/alerts/channels/{name}"): A,
    ("DELETE", "/api/v1/alerts/channels/{name}"): A,
    ("POST", "/api/v1/alerts/channels/{name}/test"): A,
    # Directory sign-in: Local Configuration's, with its secret.
    ("GET", "/api/v1/directory"): A,
    ("PUT", "/api/v1/directory"): A,
    ("DELETE", "/api/v1/directory"): A,
    ("POST", "/api/v1/directory/test"): A,
    # The HA pair: its state is read by all; pairing, settings and switchover are
    # administrators'. Between the nodes: the peer's certificate, or pairing's HTTP Basic.
    ("GET", "/api/v1/ha"): V,
    ("PATCH", "/api/v1/ha"): A,
    ("POST", "/api/v1/ha/heartbeat/restart"): A,
    ("POST", "/api/v1/ha/switchover"): A,
    ("POST", "/api/v1/ha/pair"): A,
    ("DELETE", "/api/v1/ha/pair"): A,
    ("POST", "/api/v1/ha/join/offer"): None,
    ("POST", "/api/v1/ha/join/accept"): None,
    ("GET", "/api/v1/peer/status"): None,
    ("POST", "/api/v1/peer/heartbeat/{action}"): None,
    ("DELETE", "/api/v1/peer/persistence/{service}"): None,
    ("PUT", "/api/v1/peer/settings"): None,
    ("POST", "/api/v1/peer/leave"): None,
    ("GET", "/api/v1/peer/heads"): None,
    ("POST", "/api/v1/peer/revisions"): None,
    ("POST", "/api/v1/peer/users"): None,
    ("POST", "/api/v1/peer/actions"): None,
    ("POST", "/api/v1/peer/two-factor"): None,
    # Management lockdown: a node setting of Local Configuration's.
    ("GET", "/api/v1/lockdown"): A,
    ("PUT", "/api/v1/lockdown"): A,
    # Monitoring: Prometheus's scrape takes a key (a viewer's will do) or a listed network.
    ("GET", "/metrics"): V,
    ("GET", "/api/v1/metrics/history"): V,
    ("GET", "/api/v1/support/archive"): A,
    # Software Update: administrators', like Restart Services.
    ("GET", "/api/v1/software"): A,
    ("POST", "/api/v1/software/archive"): A,
    ("POST", "/api/v1/software/install"): A,
    ("POST", "/api/v1/software/rollback"): A,
    ("PUT", "/api/v1/software/online"): A,
    ("POST", "/api/v1/software/online/check"): A,
    # The WebUI: signing in and out, its files.
    ("GET", "/lbadmin/sign-in"): None,
    ("POST", "/lbadmin/sign-in"): None,
    ("POST", "/lbadmin/sign-out"): V,
    # Each user's own second factor, whatever their role.
    ("GET", "/lbadmin/account/two-factor"): V,
    ("POST", "/lbadmin/account/two-factor"): V,
    ("POST", "/lbadmin/account/two-factor/off"): V,
    # Each user's own password, whatever their role.
    ("GET", "/lbadmin/account/password"): V,
    ("POST", "/lbadmin/account/password"): V,
    ("GET", "/lbadmin/static/{path:path}"): None,
    ("GET", "/"): V,
    # System Overview: watched by all; drain, halt and online by operators.
    ("GET", "/lbadmin/"): V,
    ("GET", "/lbadmin/overview/live"): V,
    ("GET", "/lbadmin/heartbeat"): V,
    ("POST", "/lbadmin/overview/state"): OP,
    ("GET", "/lbadmin/overview/confirm"): OP,
    ("POST", "/lbadmin/overview/setup-wizard/dismiss"): A,
    ("POST", "/lbadmin/commit"): OP,
    # Local Configuration.
    ("GET", "/lbadmin/local-configuration"): A,
    ("POST", "/lbadmin/local-configuration/sockets"): A,
    ("POST", "/lbadmin/local-configuration/sessions"): A,
    ("POST", "/lbadmin/local-configuration/metrics"): A,
    ("POST", "/lbadmin/local-configuration/certificate"): A,
    ("GET", "/lbadmin/local-configuration/alerts"): A,
    ("POST", "/lbadmin/local-configuration/alerts/add"): A,
    ("POST", "/lbadmin/local-configuration/alerts/{name}/change"): A,
    ("POST", "/lbadmin/local-configuration/alerts/{name}/test"): A,
    ("POST", "/lbadmin/local-configuration/alerts/{name}/remove"): A,
    ("GET", "/lbadmin/local-configuration/remote-authentication"): A,
    ("POST", "/lbadmin/local-configuration/remote-authentication"): A,
    ("POST", "/lbadmin/local-configuration/remote-authentication/test"): A,
    ("POST", "/lbadmin/local-configuration/remote-authentication/off"): A,
    ("POST", "/lbadmin/local-configuration/lockdown"): A,
    # Cluster Configuration: its lists are read by all, its forms are administrators'.
    ("GET", "/lbadmin/virtual-services"): V,
    ("GET", "/lbadmin/virtual-services/add"): A,
    ("POST", "/lbadmin/virtual-services/add"): A,
    ("GET", "/lbadmin/virtual-services/{label}/modify"): A,
    ("POST", "/lbadmin/virtual-services/{label}/modify"): A,
    ("GET", "/lbadmin/virtual-services/{label}/delete"): A,
    ("POST", "/lbadmin/virtual-services/{label}/delete"): A,
    ("GET", "/lbadmin/real-servers"): V,
    ("GET", "/lbadmin/real-servers/{service}/add"): A,
    ("POST", "/lbadmin/real-servers/{service}/add"): A,
    ("GET", "/lbadmin/real-servers/{service}/{server}/modify"): A,
    ("POST", "/lbadmin/real-servers/{service}/{server}/modify"): A,
    ("GET", "/lbadmin/real-servers/{service}/{server}/delete"): A,
    ("POST", "/lbadmin/real-servers/{service}/{server}/delete"): A,
    ("GET", "/lbadmin/high-availability"): V,
    ("GET", "/lbadmin/high-availability/fingerprint"): A,
    ("POST", "/lbadmin/high-availability/pair"): A,
    ("GET", "/lbadmin/high-availability/steps"): A,
    ("POST", "/lbadmin/high-availability/break"): A,
    ("POST", "/lbadmin/high-availability/settings"): A,
    ("GET", "/lbadmin/wizards/layer-7"): A,
    ("POST", "/lbadmin/wizards/layer-7"): A,
    ("GET", "/lbadmin/wizards/psm"): A,
    ("POST", "/lbadmin/wizards/psm"): A,
    # Maintenance.
    ("GET", "/lbadmin/maintenance/backup"): A,
    ("GET", "/lbadmin/maintenance/backup/download"): A,
    ("POST", "/lbadmin/maintenance/backup/restore"): A,
    ("GET", "/lbadmin/maintenance/restart"): A,
    ("POST", "/lbadmin/maintenance/restart"): A,
    ("GET", "/lbadmin/maintenance/passwords"): A,
    ("POST", "/lbadmin/maintenance/passwords/users"): A,
    ("POST", "/lbadmin/maintenance/passwords/password"): A,
    ("POST", "/lbadmin/maintenance/passwords/role"): A,
    ("POST", "/lbadmin/maintenance/passwords/remove"): A,
    ("POST", "/lbadmin/maintenance/passwords/api-keys"): A,
    ("POST", "/lbadmin/maintenance/passwords/api-keys/revoke"): A,
    ("POST", "/lbadmin/maintenance/passwords/two-factor-reset"): A,
    ("POST", "/lbadmin/maintenance/passwords/two-factor-required"): A,
    # View Configuration, Reports, Logs: read by all. Support: administrators'.
    ("GET", "/lbadmin/view-configuration"): V,
    ("GET", "/lbadmin/reports"): V,
    ("GET", "/lbadmin/reports/live"): V,
    ("GET", "/lbadmin/logs"): V,
    ("GET", "/lbadmin/support"): A,
    ("GET", "/lbadmin/support/archive"): A,
    ("GET", "/lbadmin/maintenance/software"): A,
    ("POST", "/lbadmin/maintenance/software/upload"): A,
    ("POST", "/lbadmin/maintenance/software/install"): A,
    ("POST", "/lbadmin/maintenance/software/rollback"): A,
    ("POST", "/lbadmin/maintenance/software/online"): A,
}

# The least role each command needs when it reaches an appliance with an API key (`balancer
# --url`): the most its routes need. On the appliance itself the command line is root's, an
# administrator's. None: the command acts on the machine it runs on, never through the API.
COMMANDS: dict[str, Role | None] = {
    "setup": None,
    "init": None,
    "serve": None,
    "service-unit": None,
    "stop": A,
    "status": V,
    "changes": V,
    "commit": OP,
    "logs": V,
    "audit verify": V,
    "demo": None,
    "vip list": V,
    "vip show": V,
    "vip add": A,
    "vip modify": A,
    "vip remove": A,
    "rip list": V,
    "rip add": A,
    "rip modify": A,
    "rip remove": A,
    "rip drain": OP,
    "rip halt": OP,
    "rip online": OP,
    "config show": V,
    "config export": A,
    "config import": A,
    "psm create": A,
    "persistence list": V,
    "persistence clear": A,
    "user list": A,
    "user add": A,
    "user passwd": A,
    "user set-role": A,
    "user remove": A,
    "user reset-two-factor": A,
    "user two-factor-required": A,
    "key create": A,
    "key list": A,
    "key revoke": A,
    "lab start": None,
    "lab set": None,
    "lab status": None,
    "lab stop": None,
    "ha pair": A,
    "ha status": V,
    "ha set": A,
    "ha break": A,
    "ha restart-heartbeat": A,
    "ha switchover": A,
    "alerts list": A,
    "alerts add": A,
    "alerts set": A,
    "alerts remove": A,
    "alerts test": A,
    "directory show": A,
    "directory set": A,
    "directory test": A,
    "directory off": A,
    "support archive": A,
    "lockdown show": A,
    "lockdown set": A,
    "lockdown clear": A,
    "update check": None,
    "update install": A,
    "update rollback": A,
    "update status": A,
    "engine-check": None,
}


def _compile(template: str) -> tuple[str, ...]:
    return tuple(template.strip("/").split("/")) if template != "/" else ()


# The templates by method and number of words, so that a request is matched against a few;
# those ending in a path parameter, which match any number, apart.
_BY_LENGTH: dict[tuple[str, int], list[tuple[tuple[str, ...], str]]] = {}
_OPEN_ENDED: list[tuple[str, tuple[str, ...], str]] = []
for _method, _path in ROUTES:
    _parts = _compile(_path)
    if _parts and _parts[-1].endswith(":path}"):
        _OPEN_ENDED.append((_method, _parts, _path))
    else:
        _BY_LENGTH.setdefault((_method, len(_parts)), []).append((_parts, _path))


@lru_cache(maxsize=4096)
def route(method: str, path: str) -> str | None:
    """The template in ROUTES that ``path`` is asked under, preferring the one with the most
    fixed words from the left (``/users/{name}`` is not ``/users/{name}/password``); None if
    there is none."""
    method = "GET" if method == "HEAD" else method
    asked = _compile(path)
    best: tuple[tuple[int, ...], str] | None = None
    candidates = [
        *_BY_LENGTH.get((method, len(asked)), []),
        *((parts, path) for wanted, parts, path in _OPEN_ENDED if wanted == method),
    ]
    for parts, template in candidates:
        score = _match(parts, asked)
        if score is not None and (best is None or score < best[0]):
            best = (score, template)
    return best[1] if best else None


def _match(parts: tuple[str, ...], asked: tuple[str, ...]) -> tuple[int, ...] | None:
    """How ``asked`` matches the template's ``parts``: 0 for each fixed word, 1 for each
    parameter; None if it does not."""
    score: list[int] = []
    for n, part in enumerate(parts):
        if part.endswith(":path}"):
            return (*score, 2) if len(asked) > n else None
        if n >= len(asked):
            return None
        if part.startswith("{"):
            score.append(1)
        elif part == asked[n]:
            score.append(0)
        else:
            return None
    return tuple(score) if len(asked) == len(parts) else None


def needed(method: str, path: str) -> Role | None:
    """The least role that may ask ``method path``: its row's, or an administrator for a path
    no row names (the application answers it 404 or 405 then)."""
    template = route(method, path)
    return ROUTES[(method if method != "HEAD" else "GET", template)] if template else A
