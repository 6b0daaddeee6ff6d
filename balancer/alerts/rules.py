"""Which events of the node's stream alert, and what they say. Pure: the running configuration
and the time come from the caller."""

from __future__ import annotations

from dataclasses import dataclass, field

from balancer import events
from balancer.model import Config


@dataclass(frozen=True, slots=True)
class Alert:
    """``key`` names what the alert is about: alerts with one key are grouped (``grouping``)."""

    key: str
    kind: str
    severity: str  # an RFC 5424 severity's name: error, warning, notice
    summary: str
    at: float


@dataclass(slots=True)
class Watch:
    """What the alerts have said so far: the real servers down, the services with none up."""

    down: set[tuple[str, str]] = field(default_factory=set)
    empty: set[str] = field(default_factory=set)

    def see(self, event: events.Event | events.Missed, running: Config) -> list[Alert]:
        match event:
            case events.HealthChanged(service, server, health, _, at):
                if health == "up":
                    self.down.discard((service, server))
                else:
                    self.down.add((service, server))
                severity = "notice" if health == "up" else "warning"
                key = f"server {service}/{server}"
                said = Alert(key, "health_changed", severity, events.said(event), at)
                return [said, *self._service(service, running, at)]
            case events.EngineChanged(error, at=at):
                return [_alert("engine", event, "error" if error else "notice", at)]
            case events.CommitFailed(at=at):
                return [_alert("commit", event, "error", at)]
            case events.RoleChanged(at=at):
                return [_alert("role", event, "warning", at)]
            case events.SplitBrain(raised, at=at):
                return [_alert("split brain", event, "error" if raised else "notice", at)]
        return []

    def _service(self, service: str, running: Config, at: float) -> list[Alert]:
        """A virtual service whose real servers are all down, or one that has one up again."""
        found = next((vs for vs in running.virtual_services if vs.label == service), None)
        servers = [] if found is None else [rs.label for rs in found.real_servers]
        none_up = bool(servers) and all((service, rs) in self.down for rs in servers)
        if none_up == (service in self.empty):
            return []
        key = f"service {service}"
        if none_up:
            self.empty.add(service)
            said = f"virtual service {service} has no real server up"
            return [Alert(key, "service_down", "error", said, at)]
        self.empty.discard(service)
        said = f"virtual service {service} has a real server up again"
        return [Alert(key, "service_up", "notice", said, at)]


def _alert(key: str, event: events.Event, severity: str, at: float) -> Alert:
    return Alert(key, events.kind(event), severity, events.said(event), at)
