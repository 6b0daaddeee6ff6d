"""The guide's words for a setting, its value, and a change to it: what the Commit box, View
Configuration, `balancer changes` and the API's /changes say. The names are the ones the
"?" help gives each field (``balancer.help``), so every page calls a field the same.

An edit is said twice, from one wording: as a revision's message and the audit trail name it
(``edited``: "modify real server CyberArk-PSM/PSM2") and as the WebUI's "Saved: ..." sentence
(``done``: "real server PSM2 of CyberArk-PSM modified"). ``balancer.edits`` gives every edit both.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from balancer import help
from balancer.plan import Change
from balancer.presets import psm

# Settings the forms show inside another field's choice (the check's method is part of
# "Negotiate HTTPS (GET)") or as a pair of fields (the fallback's address and port).
_OWN_NAMES = {"health_check.method": "Health Check Method", "fallback": "Fallback Server"}
_CHOICES = {
    "balancing": dict(help.BALANCING),
    "persistence.mode": dict(help.PERSISTENCE),
    "protocol": dict(help.PROTOCOLS),
}
# A real server's state is changed with System Overview's buttons: said with their verbs.
_STATES = {
    "online": "Bring real server {server} in {service} online",
    "drain": "Drain real server {server} in {service}",
    "halt": "Halt real server {server} in {service}",
}
# What the WebUI says an edit did, by its audit action.
_DONE = {
    "add": "added",
    "modify": "modified",
    "remove": "deleted",
    "drain": "drained",
    "halt": "halted",
    "online": "brought online",
}
PSM_PRESET = "CyberArk PSM preset"
_PATH = re.compile(
    r"^virtual_services\[(?P<service>[^]]+)\]"
    r"(?:\.real_servers\[(?P<server>[^]]+)\])?(?:\.(?P<field>.+))?$"
)


def name(field: str, *, server: bool = False) -> str:
    """The guide's name of a virtual service's (or a real server's) setting, e.g.
    ``health_check.path``: Request to Send."""
    fields = help.REAL_SERVER if server else help.VIRTUAL_SERVICE
    found = fields.get(field)
    return found.label if found else _OWN_NAMES.get(field, field)


def shown(field: str, value: Any) -> str:
    """A setting's value as the forms show it: 1800 not 1800.0, the guide's choices by name."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dict) and set(value) == {"ip", "port"}:
        return f"{value['ip']}, port {value['port']}"
    if field == "health_check.type":
        return check_type(value)
    return _CHOICES.get(field, {}).get(value, str(value))


def check_type(value: str, method: str | None = None) -> str:
    """Health Checks' choice: "Negotiate HTTPS (GET)" given the method, else its kind alone."""
    choices = dict(help.HEALTH_CHECKS)
    if value in choices:
        return choices[value]
    if method is not None and f"{value}:{method}" in choices:
        return choices[f"{value}:{method}"]
    # A negotiate check is named with its method; a change of method is said on its own.
    return next(
        (text.partition(" (")[0] for key, text in choices.items() if key.startswith(f"{value}:")),
        value,
    )


def said(change: Change) -> str:
    """A change in the guide's words: "Add real server PSM2 to CyberArk-PSM at ...",
    "Change Weight of real server PSM1 in CyberArk-PSM from 100 to 50"."""
    where = _PATH.match(change.path)
    before, after = change.before, change.after
    if where is None:  # not a virtual service's: the document's own name for it
        return f"Change {change.path} from {shown('', before)} to {shown('', after)}"
    service, server, field = where["service"], where["server"], where["field"]
    if field is None:
        if server is not None:
            if before is None:
                return f"Add real server {server} to {service} at {_server_address(after)}"
            return f"Remove real server {server} from {service}"
        if before is None:
            return f"Add virtual service {service} at {_service_address(after)}"
        return f"Remove virtual service {service}"
    if server is not None and field == "state":
        return _STATES[after].format(server=server, service=service)
    setting = name(field, server=server is not None)
    subject = f"real server {server} in {service}" if server is not None else service
    if before is None:
        return f"Set {setting} of {subject} to {shown(field, after)}"
    if after is None:
        return f"Clear {setting} of {subject} (was {shown(field, before)})"
    return f"Change {setting} of {subject} from {shown(field, before)} to {shown(field, after)}"


def _server_address(server: dict[str, Any]) -> str:
    port = server.get("port")
    return server["ip"] if port is None else f"{server['ip']}, port {port}"


def _service_address(service: dict[str, Any]) -> str:
    ports = str(service["ports"])
    said = f"{service['ip']}, {'ports' if ',' in ports or '-' in ports else 'port'} {ports}"
    servers = [server["label"] for server in service.get("real_servers", ())]
    return f"{said}, with real servers {', '.join(servers)}" if servers else said


def edited(action: str, service: str, server: str | None = None) -> str:
    """An edit as its revision's message and the audit trail say it: "add virtual service
    CyberArk-PSM", "drain real server CyberArk-PSM/PSM2"."""
    if server is None:
        return f"{action} virtual service {service}"
    return f"{action} real server {service}/{server}"


def done(
    action: str, service: str, server: str | None = None, *, servers: Sequence[str] = ()
) -> str:
    """The same edit as the WebUI's "Saved: ..." says it: "real server PSM2 added to
    CyberArk-PSM", "virtual service CyberArk-PSM added with real servers PSM1, PSM2"."""
    if server is None:
        with_servers = f" with real servers {', '.join(servers)}" if servers else ""
        return f"virtual service {service} {_DONE[action]}{with_servers}"
    if action == "add":
        return f"real server {server} added to {service}"
    if action == "remove":
        return f"real server {server} deleted from {service}"
    return f"real server {server} of {service} {_DONE[action]}"


def preset_done(servers: Sequence[str]) -> str:
    """The PSM preset's "Saved: ..."."""
    return (
        f"virtual services {psm.RDP_LABEL} and {psm.WEB_LABEL} added with PSM servers "
        + ", ".join(servers)
    )


def restored(revision: object) -> str:
    """A backup restored, as its revision's message says it: "restored from a backup of
    revision 12" (a backup that names no revision: of no number)."""
    return "restored from a backup" + (f" of revision {revision}" if type(revision) is int else "")
