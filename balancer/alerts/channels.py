"""Where alerts go: each channel is an e-mail account, a webhook or a syslog server, set up by
the operator and kept in the store (node-local: each node of an HA pair alerts on what it sees,
so that the survivor of a failover still alerts, and is set up on each node).

A channel's secret (the SMTP password, the webhook's HMAC key) is kept apart from its settings
and is never shown back: an answer says only whether one is set."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter

from balancer import validate
from balancer.model.types import Frozen, Label, Port
from balancer.store import NotFound, Store

Host = Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9.:_-]+$")]


class Webhook(Frozen):
    """A JSON POST, signed with HMAC-SHA256 over the timestamp and the body (``send``)."""

    kind: Literal["webhook"] = "webhook"
    url: str = Field(pattern=r"^https?://[^\s]+$", max_length=2000)
    timeout: float = Field(default=5.0, gt=0, le=60)


class Syslog(Frozen):
    """RFC 5424 over UDP or TCP (octet counting, RFC 6587) to host:port, or to the node's own
    syslog at ``path``."""

    kind: Literal["syslog"] = "syslog"
    transport: Literal["udp", "tcp", "local"] = "udp"
    host: Host = "127.0.0.1"
    port: Port = 514
    path: str = "/dev/log"
    facility: int = Field(default=16, ge=0, le=23, description="16: local0")


class Email(Frozen):
    """SMTP with STARTTLS (unless ``starttls`` is false) and, if a user is set, AUTH."""

    kind: Literal["email"] = "email"
    host: Host
    port: Port = 587
    starttls: bool = True
    username: str = ""
    sender: str = Field(pattern=r"^[^@\s]+@[^@\s]+$")
    recipients: tuple[Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+$")], ...] = Field(
        min_length=1
    )
    ca_file: str | None = Field(
        default=None, description="a PEM file to trust for the server's certificate"
    )


Settings = Annotated[Webhook | Syslog | Email, Field(discriminator="kind")]
_SETTINGS: TypeAdapter[Webhook | Syslog | Email] = TypeAdapter(Settings)


class Channel(Frozen):
    name: Label
    settings: Settings
    secret: str = ""


def channels(store: Store) -> list[Channel]:
    return [
        Channel(name=name, settings=_SETTINGS.validate_python(settings), secret=secret)
        for name, settings, secret in store.alert_channels()
    ]


def channel(store: Store, name: str) -> Channel:
    found = next((c for c in channels(store) if c.name == name), None)
    if found is None:
        raise NotFound(f"no alert channel named {name}")
    return found


def shown(channel: Channel) -> dict[str, Any]:
    """What an answer says of a channel: never its secret, only whether one is set."""
    return {
        "name": channel.name,
        **channel.settings.model_dump(mode="json"),
        "secret": "set" if channel.secret else None,
    }


def save(
    store: Store, name: str, settings: dict[str, Any], secret: str | None, *, author: str
) -> Channel:
    """Add or change a channel; ``secret`` None keeps the saved one."""
    checked = validate.parse_as(Channel, {"name": name, "settings": settings})
    saved = checked.settings.model_dump(mode="json")
    store.save_alert_channel(checked.name, saved, secret, author=author)
    return channel(store, checked.name)
